"""Training health, attributed to spec lines: what `dslc train` watches unless `--watch off`.

Once per epoch (on its last batch), or every N batches with the plan's `log_every = N`, the
watch measures, for every layer with weights (named by its state-dict prefix, the spec's names):

- `grad_norm/NAME`: the L2 norm of its gradients before the optimizer step (before clipping),
  and `grad_norm` over every parameter;
- `weight_norm/NAME`: the L2 norm of its weights after the step;
- `update_ratio/NAME`: the step's change of its weights over their norm before it;
- `act_mean/NAME`, `act_std/NAME`, `act_zero/NAME`: its output's mean, standard deviation and
  fraction of zeros (for a layer whose output goes into a ReLU: of values <= 0, the zeros the
  ReLU makes).

Forward hooks are registered for the sampled batch only and removed after it, so the other
batches run as without the watch; with `--watch off` nothing is registered at all. The epoch's
sample joins its line of metrics.jsonl (and TensorBoard's scalars); the samples of `log_every`
in between are lines of their own, with `step` (the batch's number in the run) and `epoch`.

Warnings name the layer's line in the spec: W0701 vanishing gradients, W0702 exploding ones,
W0703 dead ReLUs, W0704 a loss that did not decrease over the first epoch, W0705 a layer the
optimizer holds that gets no gradient at all (its `.grad` None: the loss does not use it; such a
layer has no `grad_norm/NAME`, and is not taken for one whose gradients vanished).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diagnostics import Diagnostic
from ..ir.graph import Graph
from .callbacks import Callback, TensorBoardLogger

VANISHED = 1e-7        # a layer's gradient norm below this (and far below the largest layer's) vanished
VANISHED_RELATIVE = 1e-4
PATIENCE = 3           # ... on this many samples in a row
EXPLODED = 1e4         # a layer's gradient norm above this (or not finite) exploded
DEAD = 0.9             # a ReLU whose outputs are zero more often than this is dead
KEYS = ("grad_norm", "weight_norm", "update_ratio", "act_mean", "act_std", "act_zero")


@dataclass
class Layer:
    name: str          # state-dict prefix: `fc1`, `blocks.2.conv1`; `G.fc1` with several models
    span: object       # where the spec makes it
    feeds_relu: bool   # its output goes into a ReLU


# ---------------------------------------------------------------------------- the spec's layers

def spec_layers(graphs: dict) -> dict:
    """The layers with weights of the plan's models ({key: graph}), by state-dict prefix."""
    several = len(graphs) > 1
    out: dict = {}
    for key, graph in graphs.items():
        _walk(graph, f"{key}." if several else "", out)
    return out


def _walk(graph: Graph, prefix: str, out: dict) -> None:
    for node in graph:
        inst = graph.instance_of(node)
        if inst is None or not inst.name:
            continue
        name = prefix + inst.name
        block = node.args.get("graph") if node.kind == "call" else None
        if isinstance(block, Graph):
            _walk(block, name + ".", out)
        elif inst.kind == "layer" and inst.weights() and name not in out:
            out[name] = Layer(name, inst.span or node.span, _feeds_relu(graph, node))


def _feeds_relu(graph: Graph, node) -> bool:
    users = [graph.nodes[u] for u in graph.users(node.id)]
    return any(u.kind == "op" and u.op is not None and u.op.name.lower() == "relu" for u in users)


# ---------------------------------------------------------------------------- measuring

class Sample:
    """One batch's measurements, filled in as the batch runs: activations in the forward pass,
    gradients before each step's optimizer step, weights after it."""

    def __init__(self, step: int, epoch: int):
        self.step, self.epoch = step, epoch
        self.values: dict = {}
        self.pending: dict = {}    # layer -> its output's statistics, not yet read back
        self.before: dict = {}     # layer -> its weights before the step
        self.sizes: dict = {}      # layer -> their norm
        self.measured: set = set() # the steps whose gradients were measured ...
        self.weighed: set = set()  # ... and whose weights were, after their optimizer step
        self.total = 0.0           # the squared norm of every parameter's gradient so far
        self.graded: set = set()   # the layers with gradients at a measured step ...
        self.ungraded: set = set() # ... and those whose parameters had none (`.grad` None)

    def activation(self, layer: Layer, output) -> None:
        """Its output's statistics, kept as a tensor: `settle` reads every layer's back at once."""
        x = output[0] if isinstance(output, (tuple, list)) else output
        if not torch.is_tensor(x) or not x.is_floating_point() or x.numel() == 0:
            return
        with torch.no_grad():
            x = x.detach() if x.dtype == torch.float32 else x.detach().float()
            n = x.numel()
            mean = x.mean()
            # two passes (the mean, then the deviations' norm): torch.std_mean gives the same figure
            # several times slower on CPU, and one pass over the sum of squares loses it to cancellation
            std = torch.linalg.vector_norm(x - mean) / math.sqrt(n - 1) if n > 1 else torch.zeros_like(mean)
            zeros = torch.count_nonzero(x <= 0) if layer.feeds_relu else n - torch.count_nonzero(x)
            self.pending[layer.name] = (torch.stack([mean, std, zeros.to(mean.dtype)]), n)

    def settle(self) -> None:
        """The activations' statistics as numbers (one read back for every layer)."""
        if not self.pending:
            return
        rows = torch.stack([stats for stats, _ in self.pending.values()]).tolist()
        for (name, (_, count)), (mean, std, zeros) in zip(self.pending.items(), rows):
            self.values.update({f"act_mean/{name}": mean, f"act_std/{name}": std, f"act_zero/{name}": zeros / count})
        self.pending = {}

    def gradients(self, step_name: str, params: list, layers: dict) -> None:
        """Before the optimizer step of `step_name`, which updates `params`; `layers`: the watched
        layers among them."""
        graded = [p for p in params if p.grad is not None]
        watched = [p for ps in layers.values() for p in ps]
        squares = _squares([p.grad for p in graded] + watched)   # the gradients', then the weights' before the step
        by_param = dict(zip(map(id, graded), squares))
        for name, ps in layers.items():
            mine = [by_param[id(p)] for p in ps if p.grad is not None]
            if not mine:
                # a layer whose parameters have no `.grad` at all is one the loss does not reach: its gradients
                # did not vanish, there are none, so it gets no grad_norm (Warnings says so once, as W0705)
                self.ungraded.add(name)
                continue
            self.graded.add(name)
            self.values[f"grad_norm/{name}"] = math.sqrt(sum(mine))
        self.sizes = dict(zip(layers, _sums(squares[len(graded):], layers.values())))
        with torch.no_grad():
            self.before = {name: [p.detach().clone() for p in ps] for name, ps in layers.items()}
        self.total += sum(squares[:len(graded)])
        self.values["grad_norm"] = math.sqrt(self.total)   # torch's clip_grad_norm_ over every step's
        self.measured.add(step_name)

    def weights(self, step_name: str, layers: dict) -> None:
        names = [n for n in layers if n in self.before]
        after = [p for ps in layers.values() for p in ps]
        old = [t for n in names for t in self.before[n]]
        with torch.no_grad():
            changes = torch._foreach_sub([p.detach() for n in names for p in layers[n]], old) if old else []
        squares = _squares(after + list(changes))
        sums = _sums(squares[:len(after)], layers.values())
        for name, value in zip(layers, sums):
            self.values[f"weight_norm/{name}"] = value
        moved = _sums(squares[len(after):], [layers[n] for n in names])
        for name, change in zip(names, moved):
            size = self.sizes[name]
            self.values[f"update_ratio/{name}"] = change / size if size > 0 else 0.0
        self.before = {}
        self.weighed.add(step_name)

    @property
    def complete(self) -> bool:
        return bool(self.measured) and self.weighed == self.measured


def _squares(tensors: list) -> list:
    """Each tensor's squared L2 norm, as floats: one foreach call and one read back for all of them
    (a few dozen separate norms cost as much as a small model's batch)."""
    if not tensors:
        return []
    with torch.no_grad():
        norms = torch._foreach_norm([t.detach() for t in tensors], 2, dtype=torch.float32)
        return [v * v for v in torch.stack([_whole(n) for n in norms]).tolist()]


def _sums(squares: list, groups) -> list:
    """The L2 norm of each group of tensors, from their squared norms in order."""
    out, at = [], 0
    for group in groups:
        out.append(math.sqrt(sum(squares[at:at + len(group)])))
        at += len(group)
    return out


def _whole(norm: torch.Tensor) -> torch.Tensor:
    """The norm of a sharded tensor (FSDP's DTensor: each process's part of it) as one plain tensor."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class HealthWatch(Callback):
    """Measures samples (`Sample`), logs them, and warns (`Warnings`)."""

    def __init__(self, layers: dict, models: dict, log_every: int | None, warnings: "Warnings"):
        self.log_every = log_every
        self.warnings = warnings
        modules = {}
        for key, model in models.items():
            for n, m in model.named_modules():
                full = f"{key}.{n}" if len(models) > 1 else n
                if full in layers:
                    modules[full] = m
        self.layers = {n: layers[n] for n in modules}
        self.modules = modules
        self.params = {n: [p for p in m.parameters(recurse=False)] for n, m in modules.items()}
        self.sample: Sample | None = None      # the sample being measured
        self.epoch_sample: dict = {}           # the epoch's, for its record
        self.handles: list = []
        self.logged: list | None = None        # [epoch, step] of the last step line in metrics.jsonl

    def _due(self, trainer, batch: int) -> bool:
        if batch == trainer.epoch_batches:
            return True
        return bool(self.log_every) and self._step(trainer, batch) % self.log_every == 0

    @staticmethod
    def _step(trainer, batch: int) -> int:
        return (trainer.epoch - 1) * trainer.epoch_batches + batch   # the same numbers after a resume

    def on_train_batch_start(self, trainer, batch: int) -> None:
        if self.sample is not None or not self._due(trainer, batch):
            return
        self.sample = Sample(self._step(trainer, batch), trainer.epoch)
        for name, m in self.modules.items():
            layer, sample = self.layers[name], self.sample
            self.handles.append(m.register_forward_hook(lambda _m, _i, out, layer=layer, s=sample: s.activation(layer, out)))

    def on_train_step_end(self, trainer, step, batch: int, loss: float) -> None:
        self._unhook()
        self.warnings.loss(trainer, step, batch, loss)

    def on_before_optimizer_step(self, trainer, step) -> None:
        if self.sample is not None and step.name not in self.sample.measured:
            self.sample.gradients(step.name, step.params, self._owned(step))

    def on_optimizer_step(self, trainer, step) -> None:
        if self.sample is not None and step.name in self.sample.measured:
            self.sample.weights(step.name, self._owned(step))

    def on_train_batch_end(self, trainer, done: int, sums: dict, count: int) -> None:
        """The sample is complete once every step that stepped has been measured (with `accumulate`,
        at the batch of the optimizer step after the sampled one)."""
        if self.sample is None or not self.sample.complete:
            return
        sample, self.sample = self.sample, None
        sample.settle()
        self.warnings.check(trainer, sample, self.layers, self.log_every)
        if done == trainer.epoch_batches:   # the epoch's last batch: its sample joins the epoch's line
            self.epoch_sample = sample.values
        else:
            self._log_step(trainer, sample)

    def _owned(self, step) -> dict:
        """The watched layers whose parameters this step's optimizer updates."""
        mine = {id(p) for p in step.params}
        return {n: ps for n, ps in self.params.items() if ps and all(id(p) in mine for p in ps)}

    def _log_step(self, trainer, sample: Sample) -> None:
        trainer.rundir.append_metrics({"step": sample.step, "epoch": sample.epoch, **sample.values})
        self.logged = [sample.epoch, sample.step]
        board = trainer.callbacks.find(TensorBoardLogger)
        if board is not None:
            board.scalars({f"steps/{k}": v for k, v in sample.values.items()}, sample.step, trainer)

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        record.update(self.epoch_sample)
        self.epoch_sample = {}

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        state["health"] = {"epoch_sample": self.epoch_sample, **self.warnings.state()}
        if self.logged is not None:   # a resume keeps metrics.jsonl's step lines up to here
            state["step_lines"] = self.logged

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        saved = state.get("health") or {}   # a checkpoint of a run with --watch off has none
        self.epoch_sample = dict(saved.get("epoch_sample") or {})
        self.logged = state.get("step_lines")
        self.warnings.load_state(saved)

    def on_train_end(self, trainer) -> None:
        trainer.rundir.health(trainer.history, list(self.layers))

    def on_fit_end(self, trainer) -> None:
        self._unhook()

    def _unhook(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# ---------------------------------------------------------------------------- warnings

class Warnings:
    """W0701-W0705, rendered to `warn`: W0701, W0703 and W0705 once per layer, W0702 and W0704 once per run."""

    def __init__(self, warn):
        self.warn = warn
        self.vanished: dict = {}      # layer -> samples in a row with vanished gradients
        self.given: set = set()
        self.reached: set = set()     # the layers that have had gradients at some check
        self.first_losses: list = []  # the first epoch's batch losses

    def state(self) -> dict:
        """What a resumed run needs to warn as the whole run would (JSON)."""
        return {"vanished": dict(self.vanished), "given": sorted(list(k) for k in self.given),
                "reached": sorted(self.reached),
                "first_losses": list(self.first_losses)}

    def load_state(self, saved: dict) -> None:
        self.vanished = {str(k): int(v) for k, v in (saved.get("vanished") or {}).items()}
        self.given = {tuple(k) for k in saved.get("given") or ()}
        self.reached = {str(n) for n in saved.get("reached") or ()}
        self.first_losses = [float(v) for v in saved.get("first_losses") or ()]

    def check(self, trainer, sample: Sample, layers: dict, log_every: int | None) -> None:
        self._unreached(sample, layers)
        grads = {n: sample.values[f"grad_norm/{n}"] for n in layers if f"grad_norm/{n}" in sample.values}
        if not grads:
            return
        self._vanishing(grads, layers, log_every)
        self._exploding(grads, layers, sample)
        for name, layer in layers.items():
            zero = sample.values.get(f"act_zero/{name}")
            if layer.feeds_relu and zero is not None and zero > DEAD:
                self._once(("dead", name), Diagnostic(
                    "W0703", f"the ReLU after `{name}` is dead for {zero:.0%} of its outputs (zero on batch "
                    f"{sample.step}, epoch {sample.epoch})", layer.span, label="its outputs are <= 0",
                    severity="warning", help="a large negative bias, a learning rate too high, or an "
                    "initialization that pushes it below 0: try a smaller learning rate, `LeakyReLU`, or "
                    "BatchNorm before the ReLU"))

    def _unreached(self, sample: Sample, layers: dict) -> None:
        """W0705, once per layer: a layer an optimizer updates whose parameters have had no gradient at
        any check (not zeros: none, the loss's backward pass never reaches them). Frozen layers are no
        optimizer's, and are not measured."""
        self.reached |= sample.graded
        names = [n for n in layers if n in sample.ungraded and n not in self.reached
                 and ("unreached", n) not in self.given]
        if not names:
            return
        first, others = names[0], names[1:]
        self.given |= {("unreached", n) for n in others}
        notes = (f"no gradient reaches {_listing(others)} either",) if others else ()
        self._once(("unreached", first), Diagnostic(
            "W0705", f"`{first}` gets no gradient: the loss does not use it", layers[first].span,
            label="no gradient reaches this layer", notes=notes, severity="warning",
            help="the optimizer holds its weights, but they stay as initialized: use its output in the loss, "
                 "remove it, or `freeze` it"))

    def _vanishing(self, grads: dict, layers: dict, log_every: int | None) -> None:
        top = max(grads.values())
        for name, g in grads.items():
            gone = g < VANISHED and g <= VANISHED_RELATIVE * top
            self.vanished[name] = self.vanished.get(name, 0) + 1 if gone else 0
        due = [n for n, count in self.vanished.items() if count >= PATIENCE and ("vanished", n) not in self.given]
        if not due:
            return
        last = due[-1]   # the one nearest the output: where the gradients give out
        self.given |= {("vanished", n) for n in due}
        when = f"{PATIENCE} epochs" if not log_every else f"{PATIENCE} checks, every {log_every} batches"
        others = [n for n in due if n != last]
        notes = (f"vanished as well: {_listing(others)} ({len(others)} layer{'s' if len(others) != 1 else ''} "
                 "before it)",) if others else ()
        self._once(("vanishing", last), Diagnostic(
            "W0701", f"gradients of `{last}` vanished (norm {grads[last]:.1g} for {when})", layers[last].span,
            label="its gradients are ~0", notes=notes, severity="warning",
            help="the layers below it do not learn: saturating activations (sigmoid, tanh) in a deep stack do "
                 "this; use ReLU with BatchNorm (or residual connections), or fewer layers"))

    def _exploding(self, grads: dict, layers: dict, sample: Sample) -> None:
        bad = {n: g for n, g in grads.items() if not math.isfinite(g) or g > EXPLODED}
        if not bad:
            return
        name = max(bad, key=lambda n: bad[n] if math.isfinite(bad[n]) else math.inf)
        self._once(("exploding", "*"), Diagnostic(
            "W0702", f"gradients of `{name}` exploded (norm {bad[name]:.3g} on batch {sample.step}, epoch "
            f"{sample.epoch})", layers[name].span, label="its gradients are huge", severity="warning",
            help="lower the learning rate, clip the gradients (`clip_grad_norm = 1.0`), or normalize the "
                 "inputs and add BatchNorm"))

    def loss(self, trainer, step, batch: int, loss: float) -> None:
        """The first epoch's batch losses; at its end, W0704 when they did not go down."""
        if trainer.epoch != 1 or len(trainer.steps) != 1:
            return
        self.first_losses.append(loss)
        n = len(self.first_losses)
        if batch != trainer.epoch_batches or n != trainer.epoch_batches or n < 8:
            return
        quarter = n // 4
        start = sum(self.first_losses[:quarter]) / quarter
        end = sum(self.first_losses[-quarter:]) / quarter
        if math.isfinite(start) and math.isfinite(end) and end >= start:
            self._once(("loss", "*"), Diagnostic(
                "W0704", f"the loss did not decrease over the first epoch (mean {start:.4g} over its first "
                f"{quarter} batches, {end:.4g} over its last {quarter})", step.loss_span, label="this loss",
                severity="warning", help="check the learning rate (0, far too small, or so large that it "
                "diverges), the labels, and that the model's layers are not frozen"))

    def _once(self, key, diagnostic: Diagnostic) -> None:
        if key in self.given:
            return
        self.given.add(key)
        self.warn(diagnostic.render())


def _listing(names: list, most: int = 6) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


__all__ = ["DEAD", "EXPLODED", "KEYS", "PATIENCE", "VANISHED", "HealthWatch", "Layer", "Sample", "Warnings",
           "spec_layers"]
