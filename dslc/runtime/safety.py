"""The callbacks that stop a run safely: on a NaN or infinite loss (a clear error naming the loss
and the last good checkpoint), and on Ctrl-C or SIGTERM (checkpoint between batches, then stop)."""
from __future__ import annotations

import math
import signal
import threading

from ..diagnostics import Diagnostic, DslcError
from . import checkpoint
from .callbacks import Callback


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the run checkpointed and stopped."""

    def __init__(self, path: str, signum: int = signal.SIGINT):
        super().__init__(path)
        self.path = path
        self.signum = int(signum)


class DivergenceCheck(Callback):
    """Stop with E0601 when a step's loss is NaN or infinite."""

    def on_train_step_end(self, trainer, step, batch: int, loss: float) -> None:
        if math.isfinite(loss):
            return
        what = "NaN" if math.isnan(loss) else "infinite"
        kept = checkpoint.checkpoints(trainer.rundir.checkpoints)
        note = f"the last good checkpoint is {kept[-1][2]}" if kept else "no checkpoint had been written yet"
        where = f"step `{step.name}`, " if len(trainer.steps) > 1 else ""
        raise DslcError(Diagnostic(
            "E0601", f"the loss became {what} in epoch {trainer.epoch}, {where}batch {batch}", step.loss_span,
            label="this loss", notes=(note,),
            help="lower the learning rate, clip gradients (`clip_grad_norm = 1.0`), or check the data"))


class SignalStop(Callback):
    """Ctrl-C and SIGTERM (what schedulers send before killing a job) ask the run to stop: after the
    current batch when an optimizer step just ended (the epoch's sums so far are checkpointed with
    it), else at the end of the epoch. A second signal stops at once. Put it after the callbacks
    that write checkpoints and logs, so an epoch that ended is recorded before the run stops."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGINT
        self.previous: dict = {}
        self.patient = False

    def on_fit_start(self, trainer) -> None:
        # torchrun passes on the signal its launcher got (Ctrl-C reaches the processes twice): in a
        # data-parallel run a second signal is not "stop now", which would leave the others waiting
        self.patient = trainer.world.size > 1
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_fit_end(self, trainer) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _agree(self, trainer) -> None:
        """In a data-parallel run, all processes stop at the same batch when any was asked to."""
        if trainer.world.size > 1:
            self.requested = trainer.world.any(self.requested, trainer.device)

    def _on_signal(self, signum, frame) -> None:
        if self.requested and not self.patient:
            raise KeyboardInterrupt  # a second Ctrl-C (or SIGTERM): stop now
        self.requested, self.signum = True, signum

    def on_train_batch_end(self, trainer, done: int, sums: dict, count: int) -> None:
        if trainer.world.size > 1:   # (one process: no call to make on every batch)
            self._agree(trainer)
        if self.requested and done % trainer.config.accumulate == 0 and done < trainer.epoch_batches:
            trainer.partial = {"sums": sums, "count": count}
            raise Interrupted(trainer.save_checkpoint(trainer.epoch - 1, done), self.signum)

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        # a signal during the epoch's last batches or its evaluation: stop at its end
        epoch = record["epoch"]
        self._agree(trainer)
        if self.requested and epoch < total and not trainer.stopped_early:
            raise Interrupted(trainer.saved or trainer.save_checkpoint(epoch, 0), self.signum)
