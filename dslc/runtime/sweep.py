"""`dslc sweep`: a hyperparameter search over a training plan, as an Optuna study.

Each trial is an ordinary run (`sweeps/NAME/trials/N/`, made by the trainer with the trial's
values as `--set` overrides); after each epoch it reports the objective's metric, so the
pruner can stop a bad trial early. The study lives in a storage (SQLite at
`sweeps/NAME/study.db` by default; any SQLAlchemy URL, such as a shared PostgreSQL database, with
`--storage`), so that:

- `--jobs K` runs K worker processes on one machine, and the same command on other machines
  with the same `--storage` joins the same study (`load_if_exists`);
- a command that is stopped and run again resumes the study: the trials to run are counted from
  the storage (finished, pruned and running ones count; failed ones do not);
- a trial whose process died (kill -9, a lost machine) is failed by Optuna's heartbeat: each
  running trial records a heartbeat every `heartbeat` seconds, and a worker that starts a trial
  first fails the trials not heard of for twice that (`optuna.storages.fail_stale_trials`); its
  slot goes to a new trial.

Exactly `trials` trials finish. Workers take a slot under a file lock beside a SQLite study; on
other storages two workers on two machines can ask for the last slot at the same moment, and the
one whose trial came second (by trial number) fails it at once, marked `surplus`, and stops.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace

from ..diagnostics import Diagnostic, DslcError
from ..files import atomic_write
from ..frontend.fmt import formatted
from ..frontend.loader import load_unit
from ..frontend.sweeps import Dimension, checked_sweep, dl_literal, plan_with
from .callbacks import Callback
from .rundir import plan_text
from .safety import Interrupted
from .trainer import Options, run_plan

LIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")   # the states that hold one of the study's slots


@dataclass(frozen=True)
class SweepOptions:
    root: str = "sweeps"            # the sweep's folder is ROOT/NAME
    storage: str | None = None      # an SQLAlchemy URL; default: SQLite at ROOT/NAME/study.db
    jobs: int = 1                   # worker processes on this machine
    trials: int | None = None       # the number of trials to finish, instead of the sweep's
    heartbeat: int = 10             # seconds between a running trial's heartbeats
    device: str | None = None

    def folder(self, name: str) -> str:
        return os.path.join(self.root, name)

    def url(self, name: str) -> str:
        if self.storage:
            return with_driver(self.storage)
        return "sqlite:///" + os.path.abspath(os.path.join(self.folder(name), "study.db"))


def with_driver(url: str) -> str:
    """`postgresql://...` with the driver that is installed: SQLAlchemy reads it as psycopg2's, and
    dslc's test extra installs psycopg (3) instead."""
    import importlib.util
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + rest
    return url


# ---------------------------------------------------------------------------- the command

def run_sweep(unit, path: str, name: str, options: SweepOptions, out=print) -> dict:
    """Run (or resume, or join) the sweep `name` of the checked file `path`; write its results and
    return a summary: trials by state, the best trial's number, value and values."""
    sweep = checked_sweep(unit, unit.decls[name])
    os.makedirs(options.folder(name), exist_ok=True)
    total = _trials(sweep, options)
    study = _study(sweep, options, worker=0)
    done = _count(study, ("COMPLETE", "PRUNED"))
    out(f"sweep `{name}`: {total} trials of `{sweep.plan}` ({done} done), {sweep.direction} {sweep.metric}; "
        f"study {_shown(options.storage) if options.storage else os.path.join(options.folder(name), 'study.db')}")
    if options.jobs > 1:
        _run_workers(path, name, options)
    else:
        work(unit, path, name, options, worker=0, out=out)
    return write_results(unit, path, sweep, _study(sweep, options, worker=0), options, out)


def _trials(sweep, options: SweepOptions) -> int:
    n = options.trials or sweep.trials
    if sweep.sampler == "grid":
        n = min(n, math.prod(len(d.choices) for d in sweep.dimensions))   # each combination once
    return n


def _shown(url: str) -> str:
    """A storage URL as printed: without its password."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':')[0]}:***@{tail}"


def _run_workers(path: str, name: str, options: SweepOptions) -> None:
    """K worker processes (spawned: each imports torch afresh), each taking trials until none is left."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(path, name, options, i), daemon=False)
             for i in range(options.jobs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise DslcError(Diagnostic("E0603", f"{len(failed)} of {len(procs)} sweep workers failed (exit codes "
                                   f"{', '.join(map(str, failed))})", file_name=path,
                                   help="run the command again to resume the sweep; --jobs 1 shows the error"))


def worker_main(path: str, name: str, options: SweepOptions, worker: int) -> None:
    """A worker process of `--jobs K`: a user error is printed, and the process exits 1."""
    import torch
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // options.jobs))
    try:
        work(load_unit(path), path, name, options, worker, out=print)
    except DslcError as e:
        print(e.render(), file=sys.stderr)
        sys.exit(1)
    except (Interrupted, KeyboardInterrupt):   # Ctrl-C reaches every worker: the command says it once
        sys.exit(130)


# ---------------------------------------------------------------------------- a worker

def work(unit, path: str, name: str, options: SweepOptions, worker: int, out=print) -> int:
    """Take trials and run them until the study has its trials; returns how many this worker ran."""
    sweep = checked_sweep(unit, unit.decls[name])
    total = _trials(sweep, options)
    study = _study(sweep, options, worker)
    ran = 0
    while True:
        failed = [t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
        if len(failed) >= total:   # every value fails (a plan that diverges at any rate): stop, not loop
            out(f"stopping: {len(failed)} trials failed, as many as the sweep's trials (the last: "
                f"{failed[-1].user_attrs['error']})")
            return ran
        trial = _claim(study, total, options, name)
        if trial is not None:
            run_trial(unit, path, sweep, study, trial, options, out)
            ran += 1
        elif _count(study, ("RUNNING", "WAITING")):
            # the last slots are held by running trials (here, on other machines, or of a killed
            # process that the heartbeat has not failed yet): wait, to take over a slot that frees
            time.sleep(options.heartbeat)
        else:
            return ran


def _study(sweep, options: SweepOptions, worker: int, tries: int = 6):
    """The study in its storage, created by the first worker and loaded by the others. Workers that
    start together race to create the tables (both SQLite and PostgreSQL refuse the second
    `CREATE TABLE`): on one machine the file lock beside a SQLite study keeps them in turn, and a
    loser of the race on a server tries again after a moment. A storage that cannot be used at all
    is E0608."""
    import random

    import sqlalchemy.exc
    _quiet_optuna()
    url = options.url(sweep.name)
    for attempt in range(tries):
        try:
            with _slot_lock(options, sweep.name):
                return _open_study(sweep, options, worker, url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError) as e:
            if attempt == tries - 1 or not _lost_race(e):
                raise _storage_error(url, e) from None
            time.sleep(0.2 + random.random())
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:   # a bad URL, no driver, no server
            raise _storage_error(url, e) from None


def _lost_race(e: Exception) -> bool:
    """True when another worker created a table or the study first (the retry loads it); any other
    error, such as a refused login or a read-only file, is the storage's fault and is not retried."""
    import sqlalchemy.exc
    if isinstance(e, sqlalchemy.exc.IntegrityError):
        return True
    text = str(getattr(e, "orig", None) or e).lower()
    return "already exists" in text or "duplicate" in text or "locked" in text


def _open_study(sweep, options: SweepOptions, worker: int, url: str):
    import optuna
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=options.heartbeat, grace_period=2 * options.heartbeat,
                                         engine_kwargs=_engine_kwargs(url))
    return optuna.create_study(study_name=sweep.name, storage=storage, direction=sweep.direction,
                               sampler=_sampler(sweep, worker, storage), pruner=_pruner(sweep), load_if_exists=True)


def _storage_error(url: str, e: Exception) -> DslcError:
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
    return DslcError(Diagnostic("E0608", f"cannot use the study's storage {_shown(url)}: {reason}",
                                file_name=_shown(url), help="check --storage: an SQLAlchemy URL such as "
                                "sqlite:///sweeps/study.db or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"))


def _quiet_optuna() -> None:
    """Optuna's log lines and two warnings off: the heartbeat is experimental, and it is meant for
    study.optimize (which runs a trial under it exactly as run_trial does)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _engine_kwargs(url: str) -> dict:
    # SQLite: wait for the other workers' writes instead of failing with "database is locked"
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _sampler(sweep, worker: int, storage):
    """The sweep's sampler, seeded by the sweep's seed, the worker and the trials the study already has:
    workers and resumed runs do not repeat each other's draws, and one uninterrupted run repeats itself."""
    import optuna
    seed = sweep.seed + 1000 * worker + _stored_trials(storage, sweep.name)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.sampler == "grid":
        return _grid_sampler({d.key: list(d.choices) for d in sweep.dimensions}, seed)
    return optuna.samplers.TPESampler(seed=seed)


def _grid_sampler(space: dict, seed: int):
    import optuna

    class Grid(optuna.samplers.GridSampler):
        """Optuna's grid, without the study.stop() it calls once every point was tried: outside
        study.optimize that raises, and a sweep asks for no more trials than the grid has points."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return Grid(space, seed=seed)


def _stored_trials(storage, name: str) -> int:
    for s in storage.get_all_studies():
        if s.study_name == name:
            return len(storage.get_all_trials(s._study_id, deepcopy=False))
    return 0


def _pruner(sweep):
    import optuna
    if sweep.pruner == "median":
        # from the fourth trial on, and from the second epoch on: the first epoch says little yet
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def _count(study, states: tuple) -> int:
    import optuna
    wanted = tuple(getattr(optuna.trial.TrialState, s) for s in states)
    return len(study.get_trials(deepcopy=False, states=wanted))


def _claim(study, total: int, options: SweepOptions, name: str):
    """A new trial, or None when the study has its `total` trials (finished, pruned or running)."""
    import optuna
    with _slot_lock(options, name):
        optuna.storages.fail_stale_trials(study)   # trials of dead processes give their slots back
        if _count(study, LIVE) >= total:
            return None
        trial = study.ask()
    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.state.name in LIVE]
    if len(ahead) >= total:   # another machine took the last slot at the same moment
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    return trial


def _slot_lock(options: SweepOptions, name: str):
    """A file lock beside a SQLite study (its workers share the machine); none for other storages."""
    url = options.url(name)
    if not url.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock
    return FileLock(url[len("sqlite:///"):] + ".lock")


# ---------------------------------------------------------------------------- a trial

class TrialReport(Callback):
    """After each epoch: the objective's metric goes to the trial (the pruner reads it); when the
    pruner says so, the run stops as early stopping stops it."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.values: list = []
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer, record: dict, total: int) -> None:
        value = record.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.values.append(float(value))
        self.trial.report(float(value), record["epoch"])
        if self.trial.should_prune():
            self.pruned_at = record["epoch"]
            trainer.stopped_early = True


def run_trial(unit, path: str, sweep, study, trial, options: SweepOptions, out=print) -> None:
    """Draw the trial's values, train the plan with them, and tell the study how it went."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize runs a trial under
    values = {d.key: suggest(trial, d) for d in sweep.dimensions}
    sets = tuple(Dimension(k, "choice").setting(v) for k, v in values.items())
    folder = os.path.join(options.folder(sweep.name), "trials", str(trial.number))
    trial.set_user_attr("run", folder)
    report = TrialReport(trial, sweep.metric)
    shown = shown_values(values)
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            train_trial(unit, path, sweep, sets, folder, report, options)
        except DslcError as e:
            trial.set_user_attr("error", e.diagnostics[0].message if e.diagnostics else str(e))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            out(f"trial {trial.number}: {shown}: failed: {trial.user_attrs.get('error')}")
            return
        except BaseException:   # Ctrl-C, a crash: the trial did not finish; the next run redoes its slot
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
    _tell(study, trial, sweep, report, shown, out)


def _tell(study, trial, sweep, report: TrialReport, shown: str, out) -> None:
    import optuna
    if not report.values:
        trial.set_user_attr("error", f"no epoch logged {sweep.metric}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out(f"trial {trial.number}: {shown}: failed: no epoch logged {sweep.metric}")
        return
    if report.pruned_at is not None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        out(f"trial {trial.number}: {shown}: pruned after epoch {report.pruned_at} "
            f"({sweep.metric} {report.values[-1]:.4g})")
        return
    best = max(report.values) if sweep.direction == "maximize" else min(report.values)
    study.tell(trial, best)
    out(f"trial {trial.number}: {shown}: {sweep.metric} {best:.4g}")


def shown_values(values: dict) -> str:
    """`optimizer.lr=0.00443, model.hidden=64`: floats to 3 significant digits (the files keep them whole)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={dl_literal(v)}" for k, v in values.items())


def suggest(trial, d: Dimension):
    if d.kind == "choice":
        return trial.suggest_categorical(d.key, list(d.choices))
    if d.kind in ("int_uniform", "int_loguniform"):
        return trial.suggest_int(d.key, d.low, d.high, log=d.kind == "int_loguniform")
    return trial.suggest_float(d.key, d.low, d.high, log=d.kind == "loguniform")


def train_trial(unit, path: str, sweep, sets: tuple, folder: str, report: TrialReport,
                options: SweepOptions) -> dict:
    """One run of the plan with `sets`, quietly, in `folder`."""
    plan = plan_with(unit, sweep.plan, sets)
    # no health checks: their hooks and figures cost time, and a trial's warnings are not shown
    run = Options(out=folder, sets=sets, device=options.device, progress=False, watch=False, callbacks=(report,))
    return run_plan(plan, path, run, out=_quiet, warn=_quiet)


def _quiet(*_args, **_kw) -> None:
    pass


# ---------------------------------------------------------------------------- results

def write_results(unit, path: str, sweep, study, options: SweepOptions, out=print) -> dict:
    """trials.csv, best.dl and the plots, in the sweep's folder; returns the summary."""
    folder = options.folder(sweep.name)
    trials = study.get_trials(deepcopy=False)
    write_csv(os.path.join(folder, "trials.csv"), trials, sweep)
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    summary = {"sweep": sweep.name, "trials": states, "folder": folder}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        best_path = os.path.join(folder, "best.dl")
        _write(best_path, best_plan(unit, path, sweep, best, best_path))
        out(f"best: trial {best.number}, {sweep.metric} {best.value:.4g}: {shown_values(best.params)} "
            f"(plan: {best_path})")
    summary["plots"] = write_plots(study, folder, out)
    _write(os.path.join(folder, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def write_csv(path: str, trials: list, sweep) -> None:
    keys = [d.key for d in sweep.dimensions]
    rows = [["number", "state", "value", *keys, "epochs", "seconds", "run", "error"]]
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else ""
        rows.append([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                     *(t.params.get(k, "") for k in keys), len(t.intermediate_values),
                     f"{seconds:.1f}" if seconds != "" else "", t.user_attrs.get("run", ""),
                     t.user_attrs.get("error", "")])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    _write(path, text.getvalue())


def best_plan(unit, path: str, sweep, best, best_path: str) -> str:
    """The plan with the best trial's values, as a `.dl` file that imports the sweep's file."""
    sets = tuple(Dimension(k, "choice").setting(v) for k, v in best.params.items())
    plan = plan_with(unit, sweep.plan, sets)
    folder = os.path.dirname(os.path.abspath(best_path))
    rel = os.path.relpath(os.path.abspath(path), folder).replace(os.sep, "/")
    name = _free_name(unit, f"{sweep.plan}_best")
    body = plan_text(replace(plan, name=name), path, folder).split("\n", 2)[2]
    head = [f"# The best trial ({best.number}) of the sweep `{sweep.name}`: {sweep.metric} = {best.value:.6g}.",
            "# Its values: " + ", ".join(f"{k} = {dl_literal(v)}" for k, v in best.params.items()),
            f"# Train it: dslc train {best_path} --plan {name}", f"import {json.dumps(rel)}", ""]
    return formatted("\n".join(head) + "\n" + body, "best.dl")


def _free_name(unit, name: str) -> str:
    n, free = 2, name
    while free in unit.decls:
        free, n = f"{name}{n}", n + 1
    return free


def write_plots(study, folder: str, out) -> list:
    """Optimization history, parameter importances and parallel coordinates, as PNG files; a plot
    Optuna cannot draw yet (importances need two finished trials) is left out, with a note."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    written = []
    for fname, draw in (("history.png", vis.plot_optimization_history), ("importances.png", vis.plot_param_importances),
                        ("parallel.png", vis.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            out(f"note: {fname} not drawn: {e}")
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.savefig(os.path.join(folder, fname), dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(fname)
    return written


def _write(path: str, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))
