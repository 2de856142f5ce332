"""What `--resume` accepts: the run's own plan, continued where it stopped.

A resumed run is exact (the same steps, each epoch logged once) only if it runs the
plan that started it. So the plan as checked now, rendered as plan.dl, must equal
the run's plan.dl, statement for statement (comments and layout aside), and the
models' generated code must equal the run's plan.py (docstrings aside: they hold line numbers).
`workers` and `strategy` may differ (they change no batch). The one other
field that may change is `epochs`, and only when `--set epochs=N` says so, in a plan
without phases: it continues a finished run, or stops an unfinished one sooner. A
schedule that spans the whole run (cosine, one_cycle, warmup_cosine) would change
its curve with the run's length, so with such a schedule `epochs` stays too.

Everything here only reads; every refusal is E0606 (E0602 for a checkpoint whose
optimizer state does not fit), raised before the trainer writes anything.
"""
from __future__ import annotations

import ast
import difflib
import os
import re

from ..diagnostics import Diagnostic, DslcError
from ..frontend.fmt import FormatError, statements
from .rundir import run_plan_name

# schedules whose curve is laid over the run's whole length (steps_per_epoch * epochs)
RUN_LENGTH_SCHEDULES = ("cosine", "one_cycle", "warmup_cosine")
_EPOCHS = re.compile(r"^    epochs = (\d+)$")
# fields that change no batch and no number, so a run may resume with others: how many processes read
# the data (data.loader), and whether the training processes hold whole models (ddp) or shards (fsdp),
# whose checkpoints are one process's either way (tests/test_fsdp.py resumes each from the other)
_FREE = re.compile(r'^    (workers = \d+|strategy = "?\w+"?)$')
_MAX_NOTES = 8


def plan_lines(text: str) -> list[str]:
    """The statements of a plan.dl, one a line whatever its layout (runs started before dslc laid
    plan.dl out as `dslc fmt` does still resume): no comments, no blank lines. A file the formatter
    cannot read is compared line by line."""
    try:
        return statements(text)
    except FormatError:
        return [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_epochs(text: str) -> int | None:
    """The top-level `epochs` of a plan.dl."""
    for line in plan_lines(text):
        m = _EPOCHS.match(line)
        if m:
            return int(m.group(1))
    return None


def differences(before: list[str], after: list[str]) -> list[str]:
    """`run:` / `now:` notes for each line that differs, in order (at most _MAX_NOTES)."""
    notes = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        was, now = before[i1:i2], after[j1:j2]
        for k in range(max(len(was), len(now))):   # a changed line's two versions side by side
            notes += [f"the run: {was[k].strip()}"] if k < len(was) else []
            notes += [f"now:     {now[k].strip()}"] if k < len(now) else []
    if len(notes) > _MAX_NOTES:
        notes = notes[:_MAX_NOTES] + [f"... and {len(notes) - _MAX_NOTES} more"]
    return notes


def check_same_plan(run_path: str, run_text: str, plan_name: str, rendered: str, epochs_may_change: bool) -> None:
    """E0606 unless `rendered` (the plan now) is the run's plan.dl `run_text` (`epochs` aside when it may change)."""
    ran = run_plan_name(run_path)
    if ran != plan_name:
        raise DslcError(Diagnostic(
            "E0606", f"{run_path} is a run of the plan `{ran}`, not `{plan_name}`", file_name=run_path,
            help=f"resume it with --plan {ran}, or start a new run of `{plan_name}` without --resume"))
    before, after = ([line for line in plan_lines(text) if not _FREE.match(line)] for text in (run_text, rendered))
    if epochs_may_change:
        before, after = ([line for line in lines if not _EPOCHS.match(line)] for lines in (before, after))
    if before != after:
        raise DslcError(Diagnostic(
            "E0606", f"the plan `{plan_name}` changed since the run in {run_path} started, and --resume continues "
            "a run exactly as it began", file_name=os.path.join(run_path, "plan.dl"),
            notes=tuple(differences(before, after)), help=_changed_help(run_path)))


def _changed_help(run_path: str) -> str:
    best = os.path.join(run_path, "checkpoints", "best.safetensors")
    return (f"undo the change (the run's plan.dl shows the plan as it ran; pass the same --set), or start a new "
            f"run without --resume (`init = \"{best}\"` starts it from this run's weights). On resume only "
            "`--set epochs=N` may change the plan (besides `workers` and `strategy`, which change no batch)")


def normalized_code(source: str) -> list[str]:
    """Python source without docstrings and comments, one statement layout: what the code does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree).splitlines()


def check_same_code(run_path: str, run_code: str | None, code: str, plan_name: str) -> None:
    """E0606 when the models' generated code differs from the run's plan.py (a missing plan.py is not compared)."""
    if run_code is None:
        return
    try:
        before = normalized_code(run_code)
    except (SyntaxError, ValueError):
        before = run_code.splitlines()   # a damaged plan.py: compared as text, so it shows as a difference
    after = normalized_code(code)
    if before != after:
        raise DslcError(Diagnostic(
            "E0606", f"the models of the plan `{plan_name}` changed since the run in {run_path} started (its "
            "plan.py holds the code it ran)", file_name=os.path.join(run_path, "plan.py"),
            notes=tuple(differences(before, after)),
            help=_changed_help(run_path) + f". If only dslc changed how it writes the code, delete "
                 f"{os.path.join(run_path, 'plan.py')} to resume with the code it writes now"))


def check_continuation(run_path: str, state: dict, total: int, ran_epochs: int | None, epochs_set: bool,
                       finished: bool, schedule: str | None, phased: bool) -> str | None:
    """E0606 when the checkpoint `state` cannot continue to `total` epochs; else None, or a line that
    says how `--set epochs` changed the run. `finished`: the run wrote its result.json (a run killed
    while writing it is resumed to write it; one that finished, or stopped early, is refused)."""
    done, batch = int(state["epoch"]), int(state["batch"])
    if state.get("stopped_early"):
        if finished or (epochs_set and total != ran_epochs):
            raise _refused(run_path, f"the run in {run_path} stopped early (early_stopping) after epoch {done}, "
                           "so it has finished", _new_run_help(run_path))
        return None    # killed while writing its results: resuming writes them
    if epochs_set and (total < done or (total == done and batch)):
        raise _refused(run_path, f"the run in {run_path} has already run {done} epochs"
                       + (f" and part of epoch {done + 1}" if batch else "") + f", more than epochs = {total}",
                       f"give --set epochs=N with N > {done} to continue it")
    if done >= total and finished:
        more = f"`--set epochs=N` with N > {done} continues it for N - {done} more epochs; or start a new run " \
               "without --resume" if not phased else _new_run_help(run_path)
        raise _refused(run_path, f"the run in {run_path} has finished: it ran {done} of {done} epochs", more)
    if not epochs_set or ran_epochs is None or total == ran_epochs:
        return None
    if schedule in RUN_LENGTH_SCHEDULES:
        raise _refused(run_path, f"the schedule `{schedule}` spans the whole run: with other epochs "
                       f"({ran_epochs} -> {total}) its curve would not be the one the run has followed",
                       _new_run_help(run_path))
    return f"epochs = {total} (the run had {ran_epochs}): {total - done} more to run"


def _new_run_help(run_path: str) -> str:
    best = os.path.join(run_path, "checkpoints", "best.safetensors")
    return f"start a new run without --resume; `init = \"{best}\"` starts it from this run's best weights"


def _refused(run_path: str, message: str, help_: str) -> DslcError:
    return DslcError(Diagnostic("E0606", message, file_name=run_path, help=help_))


def check_optimizer_state(saved: dict, optimizer) -> None:
    """ValueError unless the saved optimizer state (the JSON part) has the optimizer's parameter groups:
    the same count, the same settings (keys) and parameters per group. Loading another optimizer's
    state (SGD's into Adam) would otherwise fail later, inside a training step."""
    groups, own = saved["param_groups"], optimizer.state_dict()["param_groups"]
    if len(groups) != len(own):
        raise ValueError(f"{len(groups)} parameter groups saved, {len(own)} in the plan's optimizer")
    for i, (g, o) in enumerate(zip(groups, own)):
        if set(g) != set(o):
            extra, missing = sorted(set(g) - set(o)), sorted(set(o) - set(g))
            raise ValueError(f"parameter group {i} has other settings (saved only: {', '.join(extra) or '-'}; "
                             f"the optimizer's only: {', '.join(missing) or '-'}); was the optimizer changed?")
        if len(g["params"]) != len(o["params"]):
            raise ValueError(f"parameter group {i} holds {len(g['params'])} parameters, the optimizer's "
                             f"{len(o['params'])}")
