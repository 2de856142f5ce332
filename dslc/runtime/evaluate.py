"""`dslc eval`: the loss and metrics of a trained run on one split.

The run's weights go into the plan's models, set up as `dslc train` sets them up (restore.py),
and `Trainer.evaluate` measures the split, the very code that measured the run: on the test
split, with the weights the run ended with, the numbers are result.json's `test`, digit for
digit. The result is printed, and written to the run folder (or `--out`) as `eval-SPLIT.json`,
with `confusion-SPLIT.png` for a classifier.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..diagnostics import Diagnostic, DslcError
from .data import Stream
from .restore import BEST, LAST, Restored, restore
from .rundir import RunDir, dl_value

SPLITS = ("train", "val", "test")


@dataclass
class EvalOptions:
    run: str | None = None        # the run folder (default: the latest runs/PLAN*)
    split: str = "test"
    weights: str | None = None    # best (default), last, or a weights file
    out: str | None = None        # where eval-SPLIT.json and confusion-SPLIT.png go (default: the run folder)
    sets: tuple = ()              # --set (and --data, as data=...) as given to `dslc train`
    device: str | None = None


def evaluate(plan, path: str, options: EvalOptions, warn=print) -> dict:
    """The checked plan's run measured on `options.split`; returns what eval-SPLIT.json holds:
    plan, run, weights, split, examples, data and metrics (loss first), and for a classifier
    its confusion matrix (rows: true class) and class names."""
    restored = restore(plan, path, options.run, options.weights, options.device, warn)
    trainer = restored.trainer
    split = split_of(trainer, options.split)
    metrics = trainer.evaluate(split, trainer.phases[-1].batch_size)
    result = {"plan": plan.name, "run": restored.run, "weights": restored.weights.path,
              "weights_label": restored.weights.label, "split": options.split, "data": dl_value(plan.data),
              _size_name(split): _size(split), "metrics": metrics}
    confusion = trainer.last_confusion if trainer.task == "classification" else None
    names = trainer.data.meta.get("class_names")
    if confusion is not None:
        result["confusion"] = confusion.tolist()
        result["class_names"] = list(names) if names is not None and len(names) == len(confusion) else \
            [str(i) for i in range(len(confusion))]
    note = result_note(restored, trainer.config, options.split)
    if note:
        warn(note)
    folder = RunDir(options.out or restored.run)
    os.makedirs(folder.path, exist_ok=True)
    folder.write_text(f"eval-{options.split}.json", json_text(result))
    result["files"] = [os.path.join(folder.path, f"eval-{options.split}.json")]
    if confusion is not None:
        png = f"confusion-{options.split}.png"
        folder.confusion(confusion, result["class_names"], png)
        result["files"].append(os.path.join(folder.path, png))
    return result


def split_of(trainer, name: str):
    """The split `name` of the trainer's data (E0504 when the plan's data has none)."""
    split = getattr(trainer.data, name)
    if split is None:
        raise DslcError(Diagnostic("E0504", f"the data of the plan `{trainer.plan.name}` has no {name} split",
                                   trainer.plan.data.span, label="split here",
                                   help=f"give the data one: --data '{trainer.plan.data.entry.name}({name}=0.2)' "
                                        "(a new split of the data, which may hold examples the run trained on), "
                                        "or choose another --split"))
    return split


def _size_name(split) -> str:
    return "tokens" if isinstance(split, Stream) else "examples"


def _size(split) -> int:
    return len(split) if isinstance(split, Stream) else len(next(iter(split.values())))


def result_note(restored: Restored, config, split: str) -> str | None:
    """When the test split is measured with other weights than result.json's `test` was, say so.
    The run measured its test split with the weights it ended with: the best epoch's when
    early stopping restored them (or the last epoch was the best), else the last epoch's."""
    if split != "test":
        return None
    result = _read_json(os.path.join(restored.run, "result.json"))
    if not isinstance(result, dict) or "test" not in result:
        return None
    restores = bool(config.early_stopping and config.early_stopping.get("restore_best"))
    used = BEST if restores or result.get("best_epoch") == result.get("epochs_run") else LAST
    label = restored.weights.label
    mine = BEST if label.startswith(BEST) else LAST if label.startswith(LAST) else None
    if mine is None or mine == used:
        return None
    which = "the best epoch's" if used == BEST else f"the last epoch's (epoch {result.get('epochs_run')})"
    return (f"note: result.json's test was measured with {which} weights; these are the {label} weights, "
            f"so the numbers differ: --weights {used} measures those")


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def json_text(result: dict) -> str:
    """The result as indented JSON, each row of the confusion matrix on one line."""
    lines = [f"  {json.dumps(k)}: " + (_matrix(v) if k == "confusion" else json.dumps(v)) for k, v in result.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _matrix(rows: list) -> str:
    return "[\n" + ",\n".join(f"    {json.dumps(r)}" for r in rows) + "\n  ]"


def table(result: dict) -> str:
    """The result as a few plain lines: what was measured, then each number."""
    weights = result["weights"] if result["weights_label"] == result["weights"] else \
        f"{result['weights_label']} weights ({result['weights']})"
    lines = [f"{result['run']}: {weights}",
             f"the {result['split']} split of {result['data']}: " +
             (f"{result['examples']} examples" if "examples" in result else f"{result['tokens']} tokens")]
    width = max(len(k) for k in result["metrics"])
    lines += [f"  {k:<{width}}  {v:.6g}" for k, v in result["metrics"].items()]
    lines += [f"wrote {f}" for f in result.get("files", ())]
    return "\n".join(lines)


__all__ = ["SPLITS", "EvalOptions", "evaluate", "json_text", "result_note", "split_of", "table"]
