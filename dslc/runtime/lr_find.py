"""`dslc lr-find`: the learning-rate range test (L. N. Smith, "Cyclical Learning Rates for Training
Neural Networks", 2015).

Starting from the plan's initial weights (seeded as `dslc train` seeds them, `init` loaded),
the plan's optimizer (of its first phase, with its freezes and `lr_mult` groups) takes one
step per training batch while the learning rate grows exponentially from `min` to `max` over
`steps` steps:

    lr_i = min · (max / min) ** (i / (steps - 1)),   i = 0 .. steps - 1

Each step's loss is smoothed by an exponential moving average with bias correction, as
fastai and Lightning smooth it (beta = 0.98):

    avg_i = beta · avg_(i-1) + (1 - beta) · loss_i,   smoothed_i = avg_i / (1 - beta ** (i + 1))

The sweep stops once the smoothed loss passes 4 × the lowest it reached, or a loss is NaN or
infinite: it diverged. The suggestion is where the smoothed loss falls fastest, as Lightning's
`suggestion()` finds it: the minimum of its gradient (numpy's, one point per step, i.e. per
equal step of log(lr)), leaving out the first 10 points (the average is still settling) and
the last one (where divergence starts). With fewer than 2 points left there is none.

The plan's schedule is not run (the sweep sets the rate itself), each batch takes one step
(`accumulate` aside), and the plan's clipping and precision apply. After each step the momentum
targets (`ema(...)` in a step) move and the queues (`queue(...)`) take the step's keys, as in
training: a BYOL or MoCo loss reads them, and a target that never moved would sweep another
training than the plan's. They are the sweep's own, built with its models. Nothing the plan owns
changes: the models are built afresh in memory, `init` files and the data are only read, and
the one folder written is a new `runs/PLAN-lr-find` (`-2`, ...; or `--out`), holding
`lr_find.jsonl` (step, lr, loss, smoothed per step), `lr_find.json` (the summary) and
`lr_find.png` (the curve, with the suggestion marked).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from ..diagnostics import Diagnostic, DslcError
from . import data as data_mod
from .callbacks import Callbacks
from .rundir import RunDir, pyplot
from .trainer import Options, Trainer

BETA = 0.98            # the smoothing of fastai and Lightning
DIVERGED = 4.0         # the sweep stops when the smoothed loss passes this many times its best
SKIP_BEGIN, SKIP_END = 10, 1
FLAT = 0.1             # a sweep whose smoothed loss never falls by this fraction says little


@dataclass
class LrFindOptions:
    start: float = 1e-7
    end: float = 10.0
    steps: int = 100
    out: str | None = None          # the folder (default: a new runs/PLAN-lr-find)
    sets: tuple = ()
    device: str | None = None


@dataclass
class Point:
    step: int
    lr: float
    loss: float
    smoothed: float


def sweep(plan, path: str, options: LrFindOptions, out=print, warn=print) -> dict:
    """Run the range test on the checked plan `plan` of `path`; returns what lr_find.json holds."""
    _check(plan, options)
    trainer = Trainer(plan, path, Options(device=options.device, progress=False), out=warn, warn=warn)
    trainer.setup()
    trainer.phases = [replace(trainer.phases[0], schedule=None)]   # the sweep sets the rate itself
    trainer._start_phase(0)
    trainer.callbacks = Callbacks(trainer.step_followers())   # `ema(...)` targets and `queue(...)`s move as in training
    step = trainer.steps[0]
    if step.optimizer is None:
        raise DslcError(Diagnostic("E0507", "every parameter of the model is frozen: there is nothing to sweep",
                                   plan.decl.name_span))
    points, stop = _run(trainer, step, options)
    result = _result(plan, trainer, options, points, stop, path)
    folder = RunDir.open(f"{plan.name}-lr-find", options.out, False, checkpoints=False)   # once there is a result
    try:
        _write(folder, points, result)
    finally:
        folder.close()
    result["folder"] = folder.path
    for line in report(result):
        out(line)
    return result


def _check(plan, options: LrFindOptions) -> None:
    if len(plan.steps) != 1:
        raise DslcError(Diagnostic("E0502", f"lr-find sweeps the learning rate of one optimizer; the plan "
                                   f"`{plan.name}` has {len(plan.steps)} steps, each with its own",
                                   plan.decl.name_span, help="sweep a plan of one step (a copy of this one)"))
    if not (0 < options.start < options.end) or not math.isfinite(options.end):
        raise DslcError(Diagnostic("E0302", f"the sweep goes from --min {options.start:g} up to --max "
                                   f"{options.end:g}: both positive, min below max", file_name=plan.name))
    if options.steps < 2:
        raise DslcError(Diagnostic("E0302", f"--steps {options.steps}: the sweep needs at least 2 steps",
                                   file_name=plan.name))


def rate(i: int, options: LrFindOptions) -> float:
    """The learning rate of step i (0-based)."""
    return options.start * (options.end / options.start) ** (i / (options.steps - 1))


def _batches(trainer, batch_size: int):
    """Training batches, epoch after epoch (shuffled and augmented as training does), without end."""
    epoch = 1
    while True:
        for batch in data_mod.batches(trainer.data.train, batch_size, shuffle=True, seed=trainer.seed,
                                      epoch=epoch, augment=trainer.augment, train=True):
            yield batch
        epoch += 1


def _run(trainer, step, options: LrFindOptions) -> tuple[list, str]:
    """The sweep's points, and why it ended: "end", "diverged" or "not finite"."""
    for m in trainer.modules():
        m.train()
    for m in trainer.frozen_modules:
        m.eval()
    points, avg, best, carried = [], 0.0, math.inf, None
    batches = _batches(trainer, trainer.phases[0].batch_size)
    for i in range(options.steps):
        lr = rate(i, options)
        for group in step.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        batch = next(batches)
        inputs = [batch[f].to(trainer.device) for f in trainer.batch_fields]
        result, carried = trainer._carry(step, inputs, carried)
        loss = result[0]
        value = float(loss.detach())
        if not math.isfinite(value):
            return points, "not finite"
        (trainer.scaler.scale(loss) if trainer.scaler else loss).backward()
        trainer._optimizer_step(step)
        avg = BETA * avg + (1 - BETA) * value
        smoothed = avg / (1 - BETA ** (i + 1))
        points.append(Point(i + 1, lr, value, smoothed))
        if i > 0 and smoothed > DIVERGED * best:
            return points, "diverged"
        best = min(best, smoothed)
    return points, "end"


def suggestion(points: list) -> int | None:
    """The index of the point of steepest descent of the smoothed loss (Lightning's `suggestion`:
    the first SKIP_BEGIN and the last SKIP_END points left out), or None with fewer than 2 left."""
    kept = points[SKIP_BEGIN:len(points) - SKIP_END]
    if len(kept) < 2:
        return None
    gradient = np.gradient(np.array([p.smoothed for p in kept]))
    return SKIP_BEGIN + int(np.argmin(gradient))


def _result(plan, trainer, options: LrFindOptions, points: list, stop: str, path: str) -> dict:
    best = min(points, key=lambda p: p.smoothed) if points else None
    found = suggestion(points)
    first = points[0].smoothed if points else None
    return {"plan": plan.name, "optimizer": trainer.phases[0].optimizers[trainer.steps[0].name].entry.name,
            "min": options.start, "max": options.end, "steps": options.steps, "steps_run": len(points),
            "batch_size": trainer.phases[0].batch_size, "stopped": stop,
            "stopped_at_lr": rate(len(points), options) if stop == "not finite" else
            points[-1].lr if stop == "diverged" and points else None,
            "first_loss": first, "best_loss": best.smoothed if best else None, "best_lr": best.lr if best else None,
            "fell": 1 - best.smoothed / first if best and first else None,
            "suggestion": points[found].lr if found is not None else None,
            "suggestion_step": points[found].step if found is not None else None,
            "set": f"{lr_key(plan)}={points[found].lr:.3g}" if found is not None else None,
            "command": _command(plan, path, points[found].lr) if found is not None else None}


def lr_key(plan) -> str:
    """The `--set` key of the learning rate the sweep measured: `optimizer.lr`, or that of the step
    or the first phase that holds the optimizer (`train.optimizer.lr`, `head.optimizer.lr`)."""
    if plan.phases and "optimizer" in plan.phases[0].fields:
        return f"{plan.phases[0].name}.optimizer.lr"
    if "optimizer" in plan.fields:
        return "optimizer.lr"
    return f"{plan.steps[0].name}.optimizer.lr"


def _command(plan, path: str, lr: float) -> str:
    return f"dslc train {path} --plan {plan.name} --set {lr_key(plan)}={lr:.3g}"


# ---------------------------------------------------------------------- files and report

def _write(folder: RunDir, points: list, result: dict) -> None:
    folder.write_text("lr_find.jsonl", "".join(json.dumps(vars(p)) + "\n" for p in points))
    folder.write_json("lr_find.json", result)
    plot(folder, points, result)


def plot(folder: RunDir, points: list, result: dict) -> None:
    """lr_find.png: the loss (faint) and the smoothed loss against the learning rate (log scale),
    the suggestion marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if points:
        lrs = [p.lr for p in points]
        ax.plot(lrs, [p.loss for p in points], color="tab:blue", alpha=0.25, linewidth=1, label="loss")
        ax.plot(lrs, [p.smoothed for p in points], color="tab:blue", linewidth=2, label="smoothed loss")
        ax.set_ylim(top=max(p.smoothed for p in points[:max(1, len(points) // 2)]) * 1.5 + 1e-12,
                    bottom=min(0.0, min(p.loss for p in points)))
    if result["suggestion"] is not None:
        p = points[result["suggestion_step"] - 1]
        ax.plot([p.lr], [p.smoothed], "o", color="tab:red", markersize=8,
                label=f"suggestion: {p.lr:.3g} (steepest descent)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test of `{result['plan']}` ({result['optimizer']}, "
                 f"batch {result['batch_size']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    folder._save_figure(plt, fig, "lr_find.png")


def report(result: dict) -> list[str]:
    """What the command prints: the sweep, how it ended, the loss it reached, the suggestion."""
    lines = [f"swept {result['optimizer']}'s learning rate from {result['min']:g} to {result['max']:g} over "
             f"{result['steps_run']} of {result['steps']} steps (batch_size {result['batch_size']})"]
    if result["stopped"] == "diverged":
        lines.append(f"stopped at lr {result['stopped_at_lr']:.3g}: the smoothed loss passed {DIVERGED:g} × its "
                     "lowest (it diverged)")
    elif result["stopped"] == "not finite":
        lines.append(f"stopped at lr {result['stopped_at_lr']:.3g}: the loss became NaN or infinite (it diverged)")
    if result["best_loss"] is not None:
        lines.append(f"smoothed loss: {result['first_loss']:.4g} at first, lowest {result['best_loss']:.4g} at lr "
                     f"{result['best_lr']:.3g} ({result['fell']:.0%} lower)")
    if result["suggestion"] is None:
        lines.append(f"no suggestion: {result['steps_run']} points leave fewer than 2 once the first "
                     f"{SKIP_BEGIN} and the last are set aside; lower --min or raise --steps")
    else:
        lines.append(f"suggested learning rate: {result['suggestion']:.3g} (the steepest descent of the smoothed "
                     "loss)")
        if result["fell"] is not None and result["fell"] < FLAT:
            lines.append(f"note: the loss fell by {result['fell']:.0%} at most during the sweep, so the curve has "
                         "no clear descent and the suggestion says little: the model may be too small for the "
                         "data, or the sweep too short (raise --steps or --max)")
        lines.append(f"  {result['command']}")
    lines.append(f"wrote {os.path.join(result['folder'], 'lr_find.png')} (and lr_find.jsonl, lr_find.json)")
    return lines


__all__ = ["LrFindOptions", "Point", "lr_key", "rate", "report", "suggestion", "sweep"]
