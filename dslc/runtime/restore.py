"""A trained run, restored for the commands that use it (`dslc eval`, `dslc predict`).

The run is a folder `dslc train` wrote: `--run DIR`, or the plan's latest `runs/PLAN*`.
Its weights are, by default, `checkpoints/best.safetensors` (the best epoch's, averaged when
the plan keeps an EMA), or else the newest epoch checkpoint; `last` asks for the newest epoch
checkpoint (its averaged weights when it holds them, as evaluation uses them), and any other
value is a weights file. The plan is set up as `dslc train` sets it up (its data split, its
generated models and steps, its precision), without a run folder, and its models are given
those weights: `Trainer.evaluate` then measures exactly what the run measured. A plan whose
steps have no optimizer (an ensemble) trained nothing: its weights are its `init`, loaded as
its run loaded them.

Everything here only reads. A missing run is E0603; weights that cannot be read, or that do
not fit the plan's models, are E0602.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..diagnostics import Diagnostic, DslcError
from . import checkpoint
from .queues import load_queues
from .resume import differences, plan_lines
from .rundir import latest_run, render_plan, run_plan_name
from .trainer import STANDARDIZE_FILE, Options, Trainer
from .weights import read_state

BEST, LAST = "best", "last"
INIT = "init"   # not the run's weights but those the plan starts from (`init`): compress-report's float rows of QAT


@dataclass
class Weights:
    path: str          # the file the weights came from
    state: dict        # name -> tensor, named as in a checkpoint (`G.fc.weight` for several models)
    label: str         # how messages name them: `best (epoch 29, val_loss 0.0712)`
    epoch: int | None  # the epoch after which they were saved, when known


@dataclass
class Restored:
    run: str
    weights: Weights
    trainer: Trainer   # set up, its models holding the weights


def find_run(plan, path: str, run: str | None) -> str:
    """The run folder: `run`, or the plan's latest `runs/PLAN*` (E0603 when there is none)."""
    found = run or latest_run(os.path.join("runs", plan.name))
    if found is None or not os.path.isdir(found):
        where = found or os.path.join("runs", plan.name)
        raise DslcError(Diagnostic("E0603", f"there is no run of the plan `{plan.name}` at {where}", file_name=where,
                                   help=f"train it first (`dslc train {path} --plan {plan.name}`), or give its "
                                        "folder with --run"))
    ran = run_plan_name(found)
    if ran is not None and ran != plan.name:
        raise DslcError(Diagnostic("E0603", f"{found} is a run of the plan `{ran}`, not `{plan.name}`",
                                   file_name=found, help=f"give --plan {ran}, or a run of `{plan.name}` with --run"))
    return found


def run_weights(run: str, which: str | None = None, models: list | None = None) -> Weights:
    """The run's `best` weights (the default: else its newest epoch checkpoint), its `last`
    epoch checkpoint's, or the weights file `which`. `models`: the plan's model keys, to read a
    checkpoint's averaged weights (`ema.KEY.name`) under the names of its plain ones."""
    folder = os.path.join(run, "checkpoints")
    best = os.path.join(folder, "best.safetensors")
    if which in (None, BEST) and os.path.isfile(best):
        meta = _metadata(best)
        epoch = int(meta["epoch"]) if str(meta.get("epoch", "")).isdigit() else None
        detail = f"epoch {epoch}, {meta['monitor']} {float(meta['value']):.4g}" if epoch and "monitor" in meta \
            and _is_number(meta.get("value")) else None
        return Weights(best, read_state(best), "best" + (f" ({detail})" if detail else ""), epoch)
    if which not in (None, BEST, LAST):
        return Weights(which, read_state(which), which, None)
    found = checkpoint.checkpoints(folder)
    if not found:
        raise DslcError(Diagnostic("E0603", f"the run {run} has no weights: neither checkpoints/best.safetensors "
                                   "nor an epoch checkpoint", file_name=run,
                                   help="let the run finish an epoch, or give another run with --run"))
    epoch, batch, json_path = found[-1]
    weights, tensors, _ = checkpoint.load(json_path)
    averaged = _averaged(tensors, models or [])
    where = f"epoch {epoch}" + (f", batch {batch}" if batch else "") + (", averaged" if averaged else "")
    path = json_path if averaged else json_path[:-len(".json")] + ".safetensors"   # the average is in its state
    return Weights(path, averaged or weights, f"last ({where})", epoch)


def _averaged(tensors: dict, models: list) -> dict | None:
    """A checkpoint's EMA weights (`ema.KEY.name`) named as its weights are, when it holds them."""
    if len(models) == 1:
        found = checkpoint.under(tensors, f"ema.{models[0]}.")
    else:
        found = {k: v for key in models for k, v in _prefixed(checkpoint.under(tensors, f"ema.{key}."), key)}
    return found or None


def _prefixed(state: dict, key: str):
    return ((f"{key}.{n}", v) for n, v in state.items())


def _metadata(path: str) -> dict:
    try:
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - the metadata only labels the weights; reading them reports problems
        return {}


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def restore(plan, path: str, run: str | None, which: str | None, device: str | None, warn) -> Restored:
    """The plan set up as `dslc train` sets it up, its models holding the run's weights."""
    folder = find_run(plan, path, run)
    trainer = Trainer(plan, path, Options(device=device, progress=False), out=warn, warn=warn)
    if plan.evaluation or which == INIT:   # the weights are the plan's `init`, as its run loaded them
        if plan.evaluation and which is not None:
            raise DslcError(Diagnostic("E0603", f"the plan `{plan.name}` trains nothing (no step has an optimizer): "
                                       "its weights are its `init`, and --weights does not apply",
                                       file_name=folder, help="leave out --weights, or change the plan's `init`"))
        trainer.setup()
        weights = Weights(str(trainer.config.init), {}, "the plan's `init`", None)
    else:
        trainer.setup(init=False)   # the run's weights replace whatever `init` loaded
        weights = run_weights(folder, which, list(trainer.models))
        load(trainer, weights)
    stored = os.path.join(folder, STANDARDIZE_FILE)
    if os.path.isfile(stored) and trainer.standardize_stats() is not None:
        with open(stored, encoding="utf-8") as f:
            trainer.use_standardize_stats(json.load(f))   # the run's own figures, not a new measurement
    changed = plan_changes(plan, path, folder)
    if changed:
        warn(f"note: the plan differs from the one that trained {folder}:\n  " + "\n  ".join(changed))
    return Restored(folder, weights, trainer)


def load(trainer: Trainer, weights: Weights) -> None:
    """Put `weights` into the trainer's models (E0602 unless they fit each exactly): a checkpoint taken
    during a pruning phase holds masks, which fold into the plain weights."""
    def mismatch(key: str, fit) -> DslcError:
        return DslcError(Diagnostic("E0602", f"the weights in {weights.path} do not fit the model `{key}` of the "
                                    f"plan `{trainer.plan.name}` (was the .dl file changed since the run?)",
                                    file_name=weights.path, notes=fit.notes(),
                                    help="give the --set the run was trained with (its plan.dl lists every "
                                         "value), or another run with --run"))
    trainer.load_weights(weights.state, weights.path, mismatch, folded=True)
    _restore_targets(trainer, weights)


def _restore_targets(trainer: Trainer, weights: Weights) -> None:
    """The momentum targets (`ema(model.encoder)`) as the epoch checkpoint of the weights' epoch holds
    them, when the run kept it; else copies of the restored blocks (what a target starts as). The
    queues of keys (`queue(k, size=4096)`) likewise; else they keep their initial keys."""
    if not trainer.targets and not trainer.queues:
        return
    saved = _epoch_state(weights)
    if trainer.queues and not load_queues(trainer.queues, saved):
        trainer.warn("note: no checkpoint of the weights' epoch holds the queue of keys (`queue(...)`): the steps "
                     "read the queue as training started (random keys), so their losses are not the run's")
    for key, target in trainer.targets.items():
        state = checkpoint.under(saved, f"target.{key}.")
        if state:
            target.load_state_dict(state)
        else:
            target.reset()


def _epoch_state(weights: Weights) -> dict:
    """The tensors of the run's epoch checkpoint beside `weights` (same folder, same epoch), or {}."""
    folder = os.path.dirname(os.path.abspath(weights.path))
    found = [j for e, b, j in checkpoint.checkpoints(folder) if e == weights.epoch and b == 0] \
        if weights.epoch is not None and os.path.basename(folder) == "checkpoints" else []
    return checkpoint.load(found[-1])[1] if found else {}


# the plan fields that change what a trained model computes on a split (not how it trained)
MEASURED = ("model", "models", "data", "augment", "precision", "optimize", "metrics", "batch_size", "state", "loss")


def plan_changes(plan, path: str, run: str) -> list[str]:
    """How the plan as checked now differs from the run's plan.dl where it matters to a trained
    model (`--set` or `--data` given, or forgotten): notes; [] when they agree or the run has no
    readable plan.dl."""
    try:
        with open(os.path.join(run, "plan.dl"), encoding="utf-8") as f:
            ran = f.read()
    except (OSError, UnicodeDecodeError):
        return []
    return differences(measured(plan_lines(ran)), measured(plan_lines(render_plan(plan, path, run))))


def measured(lines: list[str]) -> list[str]:
    """The lines of a plan.dl that say what the models compute: the MEASURED fields, and the steps'
    statements but their optimizers (phases and training settings left out)."""
    out, block = [], None
    for line in lines:
        text = line.strip()
        if line.startswith("    ") and not line.startswith("        "):   # a top-level statement
            block = text.split()[0] if text.endswith("{") else None
            if block == "step" or text.split(" =")[0] in MEASURED:
                out.append(line)
        elif block == "step" and not text.startswith("optimizer ="):
            out.append(line)
    return out


__all__ = ["BEST", "LAST", "Restored", "Weights", "find_run", "load", "plan_changes", "restore", "run_weights"]
