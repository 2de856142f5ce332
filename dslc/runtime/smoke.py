"""Smoke runs: the first checks of a debugging checklist, before a long training run.

- `overfit_batches = N` (a plan field, Lightning's `overfit_batches`): train on the first N
  batches of the training split only, in order and without augmentation (`normalize` still
  applies), and validate on those same batches. A model, loss and optimizer that work drive the
  loss on so few examples to near zero; `overfit_report` says whether it got there: the last
  epoch's validation loss (the batches, in inference mode) against the first epoch's training
  loss (the batches as training first met them), near zero below `NEAR_ZERO` of it.
- `dslc train --fast-dev-run` (Lightning's `fast_dev_run`): one batch of each split, one epoch
  of each phase, in a temporary folder deleted at the end: every step, loss, metric and
  evaluation runs once, and nothing is left behind.
"""
from __future__ import annotations

from dataclasses import replace

from ..diagnostics import Diagnostic
from . import data as data_mod

NEAR_ZERO = 0.01   # the fraction of its start below which the loss counts as near zero


def overfit_data(splits: data_mod.Splits, batch_size: int, n: int) -> data_mod.Splits:
    """The first `n` training batches as the training and the validation split; no test split."""
    train = data_mod.first_batches(splits.train, batch_size, n)
    return replace(splits, train=train, val=train, test=None)


def fast_dev_data(splits: data_mod.Splits, batch_size: int) -> data_mod.Splits:
    """One batch of each split."""
    return replace(splits, train=data_mod.first_batches(splits.train, batch_size, 1),
                   val=data_mod.first_batches(splits.val, batch_size, 1),
                   test=data_mod.first_batches(splits.test, batch_size, 1))


def examples_in(split, batch_size: int) -> int:
    """The examples a (limited) split feeds: a stream's windows times its columns."""
    if isinstance(split, data_mod.Stream):
        return data_mod.steps_per_epoch(split, batch_size) * batch_size
    return data_mod.examples(split)


def overfit_report(history: list, n: int, examples: int, span) -> tuple[dict, Diagnostic | None]:
    """result.json's `overfit` part, and W0602 when the loss did not reach near zero."""
    first, last = history[0]["train_loss"], history[-1]["val_loss"]
    ratio = last / first if first > 0 else 0.0
    near_zero = ratio <= NEAR_ZERO
    report = {"batches": n, "examples": examples, "first_loss": first, "last_loss": last, "near_zero": near_zero}
    if near_zero:
        return report, None
    batches = f"{n} batch{'es' if n != 1 else ''} ({examples} examples)"
    return report, Diagnostic(
        "W0602", f"overfitting {batches}, the loss went from {first:.4g} to {last:.4g} in {len(history)} "
        f"epoch{'s' if len(history) != 1 else ''} ({_percent(ratio)} of its start): it did not reach near zero "
        f"({NEAR_ZERO:.0%} of its start)", span, label="these batches", severity="warning",
        help="a model that cannot fit a few batches has a bug, or cannot learn yet: check the learning rate "
             "(not 0, not tiny), the loss and the labels, that the layers are not frozen, or train more epochs")


def overfit_line(report: dict) -> str:
    ratio = report["last_loss"] / report["first_loss"] if report["first_loss"] > 0 else 0.0
    return (f"overfit_batches: the loss on {report['examples']} examples went from {report['first_loss']:.4g} to "
            f"{report['last_loss']:.4g} ({_percent(ratio)} of its start): near zero, the model can fit them")


def _percent(ratio: float) -> str:
    return f"{ratio:.1%}" if ratio >= 0.001 else f"{ratio * 100:.2g}%"


__all__ = ["NEAR_ZERO", "examples_in", "fast_dev_data", "overfit_data", "overfit_line", "overfit_report"]
