"""A checked plan's settings as one typed, frozen value, read once when training starts.

Every default comes from the catalogue (`catalog.FIELDS`, `catalog.CALLS`); nothing here restates
one. The trainer and its callbacks read `TrainConfig`, never the plan's field dictionary.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import catalog


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    epochs: int | None                 # None only in a plan whose phases each set their own
    batch_size: int
    accumulate: int
    precision: str                     # fp32 | bf16 | fp16
    optimize: int                      # 0 or 1: the -O level of the models' code
    compile: bool
    devices: int                       # processes of a data-parallel run (1: one process)
    strategy: str                      # ddp | fsdp (several processes: whole copies or shards)
    sync_batchnorm: bool               # SyncBatchNorm across the processes (GPUs)
    workers: int | None                # DataLoader worker processes, reading from disk (None: data in memory)
    metrics: tuple[str, ...]
    thresholds: dict                   # metric -> the probability above which a binary output is class 1
    train_metrics: bool                # the metrics are measured on the training batches too
    overfit_batches: int | None        # a smoke test: train and validate on the first N batches
    log_every: int | None              # health checks every N batches too (else once per epoch)
    clip_grad_norm: float | None
    clip_grad_value: float | None
    ema: float | None                  # the decay of an average of the weights, when kept
    augment: tuple                     # PlanCalls, in order
    init: object                       # a file, or {model: file}, or None
    rename: dict                       # prefix rules from the `init` files' names to the models'
    skip_mismatched: bool              # `init` weights of other shapes are skipped, not an error
    schedule: object                   # PlanCall | None
    early_stopping: dict | None        # the call's arguments with defaults, when the plan asks for it
    checkpoint: dict                   # the call's arguments with defaults (always: runs checkpoint anyway)
    best_monitor: str                  # what the best weights are chosen by: the checkpoint's, else early stopping's

    @classmethod
    def of(cls, plan) -> "TrainConfig":
        fields = plan.fields
        calls = {c.entry.name: c.args for c in plan.calls}

        def number(name, kind):
            value = catalog.setting(fields, name)
            return None if value is None else kind(value)
        return cls(
            seed=number("seed", int), epochs=number("epochs", int), batch_size=number("batch_size", int),
            accumulate=number("accumulate", int), precision=str(catalog.setting(fields, "precision")),
            optimize=number("optimize", int), compile=bool(catalog.setting(fields, "compile")),
            devices=number("devices", int), strategy=str(catalog.setting(fields, "strategy")),
            sync_batchnorm=bool(catalog.setting(fields, "sync_batchnorm")), workers=number("workers", int),
            metrics=tuple(catalog.setting(fields, "metrics") or ()), thresholds=_thresholds(fields),
            train_metrics=bool(catalog.setting(fields, "train_metrics")),
            overfit_batches=number("overfit_batches", int), log_every=number("log_every", int),
            clip_grad_norm=number("clip_grad_norm", float), clip_grad_value=number("clip_grad_value", float),
            ema=number("ema", float) or None, augment=tuple(catalog.setting(fields, "augment") or ()),
            init=catalog.setting(fields, "init"), rename=dict(catalog.setting(fields, "rename") or {}),
            skip_mismatched=bool(catalog.setting(fields, "skip_mismatched")), schedule=catalog.setting(fields, "schedule"),
            early_stopping=catalog.call_args(calls, "early_stopping") if "early_stopping" in calls else None,
            checkpoint=catalog.call_args(calls, "checkpoint"), best_monitor=_best_monitor(calls))


def _thresholds(fields: dict) -> dict:
    return {str(m): float(m.setting("threshold")) for m in catalog.setting(fields, "metrics") or ()
            if isinstance(m, catalog.Metric) and any(p.name == "threshold" for p in catalog.METRIC_PARAMS.get(m, ()))}


def _best_monitor(calls: dict) -> str:
    for name in ("checkpoint", "early_stopping"):
        if name in calls:
            return catalog.call_args(calls, name)["monitor"]
    return catalog.call_args(calls, "checkpoint")["monitor"]
