"""MoCo's queue of negative keys in plan steps: `negatives = queue(k, size=4096)`.

The value is the queue as it is before this step: `size` keys of earlier steps, [size, D] for
keys k [B, D] (D known at compile time). After the step's optimizer step the runtime writes
this step's k (detached; under DDP the keys of every process) over the oldest keys, a ring as
MoCo's `_dequeue_and_enqueue` (the size need not be a multiple of the batch). The queue is the
internal layer `KeyQueue` of the step (ops/queue.py), its keys are part of the run's state
(checkpoints, `--resume`); it starts as MoCo's does, from random unit-length keys drawn with the
plan's seed (plus the queue's place among the plan's queues).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import catalog
from ..ir.dims import plain
from ..ops import REGISTRY, checks
from ..ops.ptypes import INT, TENSOR
from ..ops.registry import ParamSpec
from . import ast
from .binding import bind_op
from .evaluator import Evaluator
from .values import LayerSpec

QUEUE = "queue"
_PARAMS = (ParamSpec("k", TENSOR), ParamSpec("size", INT, check=checks.positive))


@dataclass(frozen=True)
class Queue:
    """A queue of the plan: the step that holds it, its attribute there (`queue`), its shape."""
    step: str
    name: str
    size: int
    dim: int
    span: object = None


class QueueFunction:
    """The name `queue` inside a step."""

    def describe(self) -> str:
        return "`queue(...)`"


class QueueCalls(Evaluator):
    """The plan checker's part that makes queues (`self.plan`, `self.step`)."""

    def _queue_call(self, e: ast.Call, ctx):
        pos, kws = self._args(e, ctx)
        values, spans = bind_op(_PARAMS, pos, kws, QUEUE, e.span)
        k = values["k"]   # a tensor: bind_op says so otherwise
        name = self._queue_name()
        seed = int(plain(catalog.setting(self.plan.fields, "seed") or 0)) + len(self.plan.queues)
        spec = LayerSpec(REGISTRY["KeyQueue"], {"size": values["size"], "seed": seed}, {"size": spans["size"]},
                         e.span)
        result = self._apply_layer(spec, [k], [spans["k"]], e.span, ctx)
        node = next(reversed(ctx.graph.nodes.values()))
        inst = ctx.graph.instances[node.instance]
        inst.name = name
        self.plan.queues[f"{self.step.name}.{name}"] = Queue(self.step.name, name, plain(values["size"]),
                                                             plain(inst.args["dim"]), e.span)
        return result

    def _queue_name(self) -> str:
        """The queue's attribute in its step: `queue`, then `queue_2`, ..., not a name of the plan's models."""
        taken = set(self.plan.models) | set(self.plan.targets) | \
            {q.name for q in self.plan.queues.values() if q.step == self.step.name}
        name, n = QUEUE, 1
        while name in taken:
            n += 1
            name = f"{QUEUE}_{n}"
        return name

    def _queues_written(self, plan) -> None:
        """A queue is written after its step's optimizer step: in a step that trains nothing it would
        stay as it started."""
        trains = {s.name for s in plan.steps if s.optimizer is not None} if not any(
            "optimizer" in p.fields for p in plan.phases) else {s.name for s in plan.steps}
        for q in plan.queues.values():
            if q.step not in trains and any(s.name == q.step for s in plan.steps):
                self.reporter.error("E0502", f"the step `{q.step}` has no optimizer, so its `queue` would never "
                                    "be written", q.span, help="give the step an `optimizer`, or leave out `queue`")
                self.failed = True
