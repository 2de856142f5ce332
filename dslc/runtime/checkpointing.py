"""The callbacks that write checkpoints: the best weights (RUN/checkpoints/best.safetensors) and a
checkpoint every few epochs, keeping the last few."""
from __future__ import annotations

import os

from . import checkpoint
from .callbacks import Callback
from .pruning import fold
from .weights import read_state


class BestWeights(Callback):
    """Keep the weights (the averaged ones, with EMA) of the epoch with the best `monitor`: in
    best.safetensors and in memory, for early stopping's `restore_best`. A GAN's summed step losses
    say nothing of its quality: with several steps watching `train_loss`, the best is the latest."""

    def __init__(self, monitor: str, several_steps: bool):
        self.monitor = monitor
        self.latest = monitor == "train_loss" and several_steps
        self.maximize = monitor.split("_", 1)[-1] in ("accuracy", "top5", "f1")
        self.best: tuple | None = None      # (value, epoch)
        self.weights: dict | None = None

    @staticmethod
    def path(trainer) -> str:
        return os.path.join(trainer.rundir.checkpoints, "best.safetensors")

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        value = record.get(self.monitor)
        if value is None or not (self.latest or self.best is None or self._beats(value)):
            return
        self.best = (value, record["epoch"])
        weights = fold(trainer.weights(evaluated=True))   # a pruning phase's weights as the model will have them
        if trainer.world.main:   # in a data-parallel run, rank 0 writes
            checkpoint.save_weights(self.path(trainer), weights,
                                    {"epoch": record["epoch"], "monitor": self.monitor, "value": value})
        self.weights = {k: v.detach().clone() for k, v in weights.items()}

    def _beats(self, value: float) -> bool:
        return value > self.best[0] if self.maximize else value < self.best[0]

    def on_save_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        state["best"] = list(self.best) if self.best else None

    def on_load_checkpoint(self, trainer, state: dict, tensors: dict) -> None:
        self.best = tuple(state["best"]) if state.get("best") else None
        if self.best is not None and os.path.exists(self.path(trainer)):
            self.weights = read_state(self.path(trainer))


class PeriodicCheckpoints(Callback):
    """A checkpoint after every `every` epochs, the last epoch and an early stop, keeping the last
    `keep` whole-epoch ones; a checkpoint taken mid-epoch (on a signal) is dropped once a later epoch's
    is written. `trainer.saved` is the path written after this epoch, or None."""

    def __init__(self, every: int, keep: int):
        self.every, self.keep = every, keep

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        epoch = record["epoch"]
        trainer.saved = None
        if not (epoch % self.every == 0 or epoch == total or trainer.stopped_early):
            return
        trainer.saved = trainer.save_checkpoint(epoch, 0)
        if not trainer.world.main:
            return
        done = checkpoint.checkpoints(trainer.rundir.checkpoints)
        for c in done:
            if c[1] != 0 and c[0] < epoch:
                checkpoint.remove(c[2])
        for c in [c for c in done if c[1] == 0][:-self.keep]:
            checkpoint.remove(c[2])
