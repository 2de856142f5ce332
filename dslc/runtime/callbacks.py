"""The training loop's hooks (`Callback`) and the callbacks that do not write checkpoints:
metrics.jsonl, TensorBoard, the progress display, early stopping, an exponential moving average
of the weights; and gradient clipping. (checkpointing.py: the best weights and periodic
checkpoints; safety.py: NaN detection and signals.)"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time

import torch

from .checkpoint import under
from .metrics import HIGHER_IS_BETTER


class Callback:
    """A hook into `dslc train`'s loop, as Keras' and Lightning's callbacks are: the loop calls each
    method at its moment with the trainer; the base class does nothing. Early stopping, the
    average of the weights, the best weights, checkpoints, NaN detection, signals, metrics.jsonl,
    TensorBoard and the progress display are callbacks; the loop itself only trains and evaluates."""

    def on_fit_start(self, trainer) -> None:
        """Before the first epoch this process runs (a resumed run included)."""

    def on_epoch_start(self, trainer, epoch: int, total: int, batches: int) -> None:
        """Before epoch `epoch` of `total`, which has `batches` batches."""

    def listens(self, hook: str) -> bool:
        """Whether the batch hook `hook`, which this callback defines, does something in the epoch about to
        start (asked as each epoch starts): False leaves the callback out of that hook's calls."""
        return True

    def on_train_batch_start(self, trainer, batch: int) -> None:
        """Before batch `batch` (1-based) of the epoch runs."""

    def on_train_step_end(self, trainer, step, batch: int, loss: float) -> None:
        """After a step's forward pass on batch `batch` (1-based) of the epoch: its loss's value."""

    def on_before_optimizer_step(self, trainer, step) -> None:
        """Before `step`'s optimizer updates its parameters: their gradients are there (unscaled, not clipped)."""

    def on_optimizer_step(self, trainer, step) -> None:
        """After `step`'s optimizer updated its parameters."""

    def on_train_batch_end(self, trainer, done: int, sums: dict, count: int) -> None:
        """After `done` batches of the epoch: `sums` are each step's loss summed over `count` examples."""

    def evaluation_weights(self, trainer):
        """A context in which the models hold the weights to evaluate and keep as the best."""
        return contextlib.nullcontext()

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        """After an epoch, with its record (its schedules stepped)."""

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        """Add what must survive a resume to a checkpoint being written (JSON `state`, `tensors`)."""

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        """Take it back from the checkpoint a resumed run starts from."""

    def on_train_end(self, trainer) -> None:
        """After the last epoch (or an early stop), before the test split is evaluated."""

    def on_fit_end(self, trainer) -> None:
        """When the loop ends: finished, paused, interrupted or failed."""


BATCH_HOOKS = ("on_train_batch_start", "on_train_step_end", "on_before_optimizer_step", "on_optimizer_step",
               "on_train_batch_end")


@functools.cache
def _class_hooks(cls: type) -> frozenset:
    """The batch hooks for which class `cls` replaces the base's no-op."""
    return frozenset(hook for hook in BATCH_HOOKS if getattr(cls, hook) is not getattr(Callback, hook))


def _hooks(callback: Callback) -> list[str]:
    """The batch hooks `callback` does something at in the epoch about to start: those its class (or the
    object itself) replaces the base's no-op for, that it listens to."""
    defined, own = _class_hooks(type(callback)), vars(callback)
    return [hook for hook in BATCH_HOOKS if (hook in defined or hook in own) and callback.listens(hook)]


def _nothing(*args) -> None:
    """A batch hook no callback listens to."""


class Callbacks(Callback):
    """Several callbacks, called in order. The hooks of every batch go only to the callbacks that
    define them (most do nothing there, and a batch of a small model takes a millisecond), found
    again as each epoch starts: `items` may change between epochs, not within one. A batch hook
    that one callback listens to is that callback's own method, set on this object (one call a
    batch, not two); one that none listens to is a no-op."""

    def __init__(self, items: list):
        self.items = list(items)
        self._bind_batch_hooks()

    def _bind_batch_hooks(self) -> None:
        self.batch_hooks = {hook: [] for hook in BATCH_HOOKS}
        for c in self.items:
            for hook in _hooks(c):
                self.batch_hooks[hook].append(getattr(c, hook))
        for hook, listeners in self.batch_hooks.items():
            if len(listeners) <= 1:
                setattr(self, hook, listeners[0] if listeners else _nothing)
            else:
                vars(self).pop(hook, None)   # the class's method: each listener in order

    def on_fit_start(self, trainer) -> None:
        for c in self.items:
            c.on_fit_start(trainer)

    def on_epoch_start(self, trainer, epoch: int, total: int, batches: int) -> None:
        self._bind_batch_hooks()
        for c in self.items:
            c.on_epoch_start(trainer, epoch, total, batches)

    def on_train_batch_start(self, trainer, batch: int) -> None:
        for hook in self.batch_hooks["on_train_batch_start"]:
            hook(trainer, batch)

    def on_train_step_end(self, trainer, step, batch: int, loss: float) -> None:
        for hook in self.batch_hooks["on_train_step_end"]:
            hook(trainer, step, batch, loss)

    def on_before_optimizer_step(self, trainer, step) -> None:
        for hook in self.batch_hooks["on_before_optimizer_step"]:
            hook(trainer, step)

    def on_optimizer_step(self, trainer, step) -> None:
        for hook in self.batch_hooks["on_optimizer_step"]:
            hook(trainer, step)

    def on_train_batch_end(self, trainer, done: int, sums: dict, count: int) -> None:
        for hook in self.batch_hooks["on_train_batch_end"]:
            hook(trainer, done, sums, count)

    @contextlib.contextmanager
    def evaluation_weights(self, trainer):
        with contextlib.ExitStack() as stack:
            for c in self.items:
                stack.enter_context(c.evaluation_weights(trainer))
            yield

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        for c in self.items:
            c.on_epoch_end(trainer, record, total)

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for c in self.items:
            c.on_save_checkpoint(trainer, state, tensors)

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for c in self.items:
            c.on_load_checkpoint(trainer, state, tensors)

    def on_train_end(self, trainer) -> None:
        for c in self.items:
            c.on_train_end(trainer)

    def on_fit_end(self, trainer) -> None:
        for c in self.items:
            c.on_fit_end(trainer)

    def find(self, kind: type):
        """The first callback of class `kind`, or None."""
        return next((c for c in self.items if isinstance(c, kind)), None)


class MetricsLog(Callback):
    """Each epoch's record as one line of RUN/metrics.jsonl."""

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        trainer.rundir.append_metrics(record)


class TensorBoardLogger(Callback):
    """The epoch's numbers as TensorBoard scalars in RUN/tensorboard, when tensorboard is installed."""

    def __init__(self):
        self.writer, self.tried = None, False

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        self.scalars({k: v for k, v in record.items() if k != "epoch"}, record["epoch"], trainer)

    def scalars(self, values: dict, step: int, trainer) -> None:
        """Numbers as scalars at `step` (an epoch; a batch for the `steps/` tags of health checks)."""
        if not self.tried:
            self.tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:   # a dependency, but an environment may still lack it
                return
            self.writer = SummaryWriter(os.path.join(trainer.rundir.path, "tensorboard"))
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def on_fit_end(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer, self.tried = None, False


class ProgressDisplay(Callback):
    """A rich progress bar on a terminal; one plain line per epoch otherwise."""

    def __init__(self, progress: bool | None, out):
        self.out = out
        self.live = sys.stdout.isatty() if progress is None else progress
        self.bar = None
        self.started = 0.0

    def on_epoch_start(self, trainer, epoch: int, total: int, batches: int) -> None:
        self.started = time.perf_counter()
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        if self.bar is None:
            self.bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                                TimeRemainingColumn(), transient=True)
            self.bar.start()
        else:
            for t in list(self.bar.task_ids):
                self.bar.remove_task(t)
        self.task = self.bar.add_task("train", total=batches, epoch=f"{epoch}/{total}", loss="-", speed="")

    def listens(self, hook: str) -> bool:
        return self.live   # the bar's; the plain line is written at the epoch's end

    def on_train_batch_end(self, trainer, done: int, sums: dict, count: int) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        loss = sum(sums.values()) / max(count, 1)
        self.bar.update(self.task, completed=done, loss=f"{loss:.4f}", speed=f"{count / elapsed:,.0f} ex/s")

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        # a layer's health numbers (`grad_norm/fc1`) are for metrics.jsonl and TensorBoard: too many for a line
        keys = [k for k in record if k not in ("epoch", "seconds", "phase") and "/" not in k]
        text = f"epoch {record['epoch']}/{total}  " + "  ".join(
            f"{k} {record[k]:.4g}" if isinstance(record[k], float) else f"{k} {record[k]}" for k in keys) + \
            f"  {record['seconds']:.1f}s"
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            self.out(text)

    def on_fit_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _mode_of(monitor: str) -> str:
    metric = monitor.removeprefix("val_").removeprefix("train_")
    return "max" if metric in HIGHER_IS_BETTER else "min"


class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs
    in a row (Keras' and Lightning's semantics: with patience 5, the 5th epoch in a row
    without improvement is the last; with patience 0, the first one). Mode "auto" maximizes accuracy, top5 and f1 (`val_accuracy`, ...) and
    minimizes everything else. `val_loss` falls back to `train_loss` when the epoch has no
    validation loss (a plan without a validation split).

    `improved` says whether the last update found a new best. With `restore_best`, pass
    the module to `update` and the weights of the best epoch are kept (on the CPU) so that
    `restore(module)` can put them back when training ends (they are not part of
    `state_dict()`, which is JSON: a resumed run restores from its best checkpoint)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "auto",
                 min_delta: float = 0.0, restore_best: bool = True):
        if mode not in ("min", "max", "auto"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.mode = _mode_of(monitor) if mode == "auto" else mode
        self.min_delta = abs(float(min_delta))
        self.restore_best = bool(restore_best)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped = False
        self.improved = False
        self.best_state: dict | None = None

    def value(self, metrics: dict) -> float:
        v = metrics.get(self.monitor)
        if v is None and self.monitor == "val_loss":
            v = metrics.get("train_loss")
        if v is None:
            raise KeyError(f"early stopping monitors `{self.monitor}`, which the epoch's metrics lack "
                           f"(they have {', '.join(metrics)})")
        return float(v)

    def is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, metrics: dict, module: torch.nn.Module | None = None) -> bool:
        """Record the epoch's metrics; True when training should stop."""
        value = self.value(metrics)
        self.improved = self.is_better(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if module is not None and self.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped = True
        return self.stopped

    def restore(self, module: torch.nn.Module) -> bool:
        """Load the best epoch's weights into `module` (with restore_best); whether it did."""
        if not self.restore_best or self.best_state is None:
            return False
        module.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict:
        best = self.best
        return {"monitor": self.monitor, "mode": self.mode, "best": best if best is None or math.isfinite(best)
                else repr(best), "best_epoch": self.best_epoch, "wait": self.wait, "stopped": self.stopped}

    def load_state_dict(self, d: dict) -> None:
        best = d.get("best")
        self.best = float(best) if best is not None else None
        self.best_epoch = d.get("best_epoch")
        self.wait = int(d.get("wait", 0))
        self.stopped = bool(d.get("stopped", False))


class EMA:
    """An exponential moving average of a module's weights: after each optimizer step,
    `update()` sets ema = decay * ema + (1 - decay) * param for every floating-point
    parameter; buffers (batch-norm statistics, counters) and non-floating parameters are
    copied as they are. `swapped()` runs a block with the averaged weights loaded."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.module = module
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        d = self.decay
        for name, live in self.module.state_dict(keep_vars=True).items():
            avg = self.shadow[name]
            if isinstance(live, torch.nn.Parameter) and live.is_floating_point():
                avg.mul_(d).add_(live.detach().to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(live.detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise KeyError(f"the EMA state lacks {sorted(missing)}")
        with torch.no_grad():
            for k, v in self.shadow.items():
                v.copy_(sd[k])

    @contextlib.contextmanager
    def swapped(self):
        """Temporarily load the averaged weights into the module (for evaluation)."""
        backup = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.shadow)
        try:
            yield self.module
        finally:
            self.module.load_state_dict(backup)


class EarlyStop(Callback):
    """The plan's `early_stopping(...)`: `rule` after each epoch (it runs after the best weights were
    chosen, before the checkpoint that records it); at the end, with `restore_best`, the best epoch's
    weights (`best`, a checkpointing.BestWeights) go back into the models, and into their average
    when the plan keeps one (`ema`), which is what evaluation then measures."""

    def __init__(self, rule: EarlyStopping, best):
        self.rule, self.best = rule, best

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        if self.rule.update(record["epoch"], record):
            trainer.stopped_early = True

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        state["early_stopping"] = self.rule.state_dict()

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        if state.get("early_stopping"):
            self.rule.load_state_dict(state["early_stopping"])

    def on_train_end(self, trainer) -> None:
        # `is not None`: under FSDP only rank 0 keeps the best weights, and every process loads them
        if self.rule.restore_best and self.best.weights is not None:
            trainer.load_weights(self.best.weights, self.best.path(trainer))
            averaged = trainer.callbacks.find(AveragedWeights)
            if averaged is not None:   # evaluation swaps the average in: it is the best epoch's from now on
                averaged.restart(trainer.models)


class AveragedWeights(Callback):
    """The plan's `ema = decay`: an EMA of each model's weights, updated after each optimizer step of
    the steps that train it, swapped in to evaluate and to choose the best weights, checkpointed."""

    def __init__(self, models: dict, decay: float):
        self.ema = {k: EMA(m, decay) for k, m in models.items()}

    def on_optimizer_step(self, trainer, step) -> None:
        for k in step.models:
            if k in self.ema:
                self.ema[k].update()

    def restart(self, models: dict) -> None:
        """Make the models' weights the average (early stopping put the best epoch's back)."""
        for k, e in self.ema.items():
            e.load_state_dict(models[k].state_dict())

    @contextlib.contextmanager
    def evaluation_weights(self, trainer):
        with contextlib.ExitStack() as stack:
            for e in self.ema.values():
                stack.enter_context(e.swapped())
            yield

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for k, e in self.ema.items():
            tensors.update({f"ema.{k}.{n}": v for n, v in e.state_dict().items()})

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        for k, e in self.ema.items():
            e.load_state_dict(under(tensors, f"ema.{k}."))


def clip_gradients(parameters, norm: float | None, value: float | None) -> float | None:
    """Clip gradients in place: each element to ±`value` (clip_grad_value_), then the global
    2-norm to `norm` (clip_grad_norm_). Returns the gradients' total norm before any
    clipping, or None when neither is given. (With an fp16 GradScaler, unscale first.)"""
    if norm is None and value is None:
        return None
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if value is None:
        return float(torch.nn.utils.clip_grad_norm_(params, float(norm)))
    total = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    torch.nn.utils.clip_grad_value_(params, float(value))
    if norm is not None:
        torch.nn.utils.clip_grad_norm_(params, float(norm))
    return total


__all__ = ["EMA", "AveragedWeights", "Callback", "Callbacks", "EarlyStop", "EarlyStopping", "MetricsLog",
           "ProgressDisplay", "TensorBoardLogger", "clip_gradients"]
