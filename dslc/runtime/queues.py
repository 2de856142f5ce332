"""MoCo's queues of negative keys (`negatives = queue(k, size=4096)` in a step).

Each queue is a `KeyQueue` module of its step's generated code (ops/queue.py): the step reads it
and keeps its keys k while training; after that step's optimizer step the runtime has it write
them over its oldest keys. Under DDP the keys of every process are gathered first, in rank order
(MoCo's `concat_all_gather`), so every process keeps the same queue. Checkpoints hold each queue
(`queue.STEP.NAME.keys` and `.ptr`), so a resumed run continues with the very same negatives.
"""
from __future__ import annotations

import torch

from .callbacks import Callback
from .checkpoint import under


def step_queues(plan, step: str, module: torch.nn.Module, device) -> dict:
    """"STEP.NAME" -> the KeyQueue module of each queue of the step `step` (moved to `device`)."""
    return {key: module.get_submodule(q.name).to(device) for key, q in plan.queues.items() if q.step == step}


def load_queues(queues: dict, tensors: dict) -> bool:
    """Each queue as `tensors` (a checkpoint's) holds it; False when they hold none of them."""
    found = False
    for key, q in queues.items():
        state = under(tensors, f"queue.{key}.")
        if state:
            q.load_state_dict(state)
            found = True
        q.pending = []
    return found


class KeyQueues(Callback):
    """Enqueues each step's keys after its optimizer step, and keeps the queues in the checkpoints."""

    def __init__(self, queues: dict, world):
        self.queues = queues
        self.world = world

    def _gather(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys of every process, in rank order (any batch sizes; the same in every process)."""
        parts = self.world.gather(keys.cpu())
        return torch.cat(parts).to(keys.device)

    def on_optimizer_step(self, trainer, step) -> None:
        gather = self._gather if self.world.size > 1 else None
        for key, q in self.queues.items():
            if key.split(".")[0] == step.name:
                q.enqueue(gather)

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for key, q in self.queues.items():
            tensors.update({f"queue.{key}.{n}": v.detach().clone() for n, v in q.state_dict().items()})

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        load_queues(self.queues, tensors)


__all__ = ["KeyQueues", "load_queues", "step_queues"]
