"""Tallying outcomes: counts per class, distinct failures (one per signature, with the smallest case
that showed it), the diagnostics' codes seen, and the table, reproducer files and JSON of a run."""
from __future__ import annotations

import collections
import datetime
import importlib.util
import json
import os
import re
import subprocess
from dataclasses import dataclass, field

from .cases import CLASSES, Case, Outcome, signature
from .minimize import abbreviate
from .seeds import ROOT

MODES = {"api": "in-process", "cli": "command line"}


@dataclass
class Failure:
    case: Case                   # the smallest case seen with this signature
    outcome: Outcome
    count: int = 0
    operators: collections.Counter = field(default_factory=collections.Counter)
    reproducer: bytes | None = None     # minimized main file
    tries: int = 0               # cases the minimizer ran
    path: str = ""               # where the reproducer was saved

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.case.files.values())


class Tally:
    def __init__(self):
        self.counts = {mode: collections.Counter() for mode in MODES}
        self.failures: dict[tuple, Failure] = {}
        self.codes = collections.Counter()
        self.operators = collections.Counter()
        self.cases = 0

    def add(self, case: Case, outcome: Outcome) -> None:
        self.counts[case.mode][outcome.cls] += 1
        self.codes.update(outcome.codes)
        if case.mode == "api":
            self.cases += 1
            self.operators.update(case.operators)
        if outcome.failed:
            self._add_failure(case, outcome)

    def _add_failure(self, case: Case, outcome: Outcome) -> None:
        sig = signature(case, outcome)
        f = self.failures.get(sig)
        if f is None:
            f = self.failures[sig] = Failure(case, outcome)
        elif sum(len(v) for v in case.files.values()) < f.size:
            f.case, f.outcome = case, outcome
        f.count += 1
        f.operators.update(case.operators)

    @property
    def failed(self) -> int:
        return sum(c[k] for c in self.counts.values() for k in ("internal", "hang", "memory"))

    def progress_line(self, elapsed: float) -> str:
        api, cli = self.counts["api"], self.counts["cli"]
        return (f"{self.cases} cases, {elapsed:.0f} s: " + " ".join(f"{k} {api[k]}" for k in CLASSES)
                + f" | cli {sum(cli.values())}: failures {sum(cli[k] for k in ('internal', 'hang', 'memory'))}"
                + f" | distinct failures {len(self.failures)}")


# ---------------------------------------------------------------- saving reproducers


def slug(f: Failure) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{f.case.mode}-{f.outcome.cls}-{f.outcome.etype}").strip("-")


def save_reproducers(tally: Tally, out: str) -> None:
    """Each failure's minimized file (and the case as found) under `out`; multi-file cases keep
    their other files beside it."""
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(ordered(tally), 1):
        folder = os.path.join(out, f"{i:02d}-{slug(f)}")
        os.makedirs(folder, exist_ok=True)
        for rel, data in f.case.files.items():
            dest = os.path.join(folder, "found", rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(data)
        f.path = os.path.join(folder, "found", f.case.main)
        if f.reproducer is not None:
            f.path = os.path.join(folder, "minimized.dl")
            with open(f.path, "wb") as fh:
                fh.write(f.reproducer)
        with open(os.path.join(folder, "failure.json"), "w") as fh:
            json.dump(failure_json(f), fh, indent=2)


def ordered(tally: Tally) -> list[Failure]:
    return sorted(tally.failures.values(), key=lambda f: (f.outcome.cls, f.case.mode, -f.count))


# ---------------------------------------------------------------- the table


def table(tally: Tally, header: str) -> str:
    lines = [header, "", f"{'':14}" + "".join(f"{k:>10}" for k in CLASSES)]
    for mode, name in MODES.items():
        lines.append(f"{name:14}" + "".join(f"{tally.counts[mode][k]:>10}" for k in CLASSES))
    fails = ordered(tally)
    lines += ["", f"distinct failures: {len(fails)}"]
    for i, f in enumerate(fails, 1):
        o = f.outcome
        lines += [f"{i:2}. {o.cls} ({MODES[f.case.mode]}, {o.phase or '?'}): {o.etype} at {o.where or o.frame or '?'}"
                  f"  [{f.count} case{'s' if f.count != 1 else ''}; found by {_operators(f)}; seed {f.case.origin}]",
                  f"    message: {o.message[:200]}"]
        if f.case.mode == "cli":
            lines.append(f"    command: dslc {' '.join(f.case.argv)}")
        text = f.reproducer if f.reproducer is not None else f.case.files[f.case.main]
        lines.append(f"    {'minimized' if f.reproducer is not None else 'case'}: {abbreviate(text, 300)!s}")
        if f.path:
            lines.append(f"    reproducer: {f.path}")
    top = ", ".join(f"{c} {n}" for c, n in tally.codes.most_common(12))
    lines += ["", f"diagnostics seen (clean cases): {top or 'none'}"]
    return "\n".join(lines)


def _operators(f: Failure) -> str:
    return ", ".join(f"{op} {n}" for op, n in f.operators.most_common(4)) or "-"


# ---------------------------------------------------------------- JSON


def failure_json(f: Failure) -> dict:
    o = f.outcome
    return {"class": o.cls, "mode": f.case.mode, "phase": o.phase, "exception": o.etype, "frame": o.frame,
            "where": o.where, "message": o.message, "cases": f.count, "operators": dict(f.operators),
            "seed_file": f.case.origin, "first_case": f.case.index, "command": list(f.case.argv),
            "reproducer": abbreviate(f.reproducer if f.reproducer is not None else f.case.files[f.case.main], 2000),
            "minimized": f.reproducer is not None, "minimizer_cases": f.tries, "path": f.path}


def machine() -> dict:
    """bench/common.py's description of the machine (loaded by path: tools/ has its own common.py)."""
    spec = importlib.util.spec_from_file_location("bench_common", os.path.join(ROOT, "bench", "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine()


def tree() -> str:
    """The commit the run tested, and whether dslc/ had changes not committed yet (cases and
    outcomes depend on both: the seeds are the tree's files)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--", "dslc", "grammars") else "")


def result_json(tally: Tally, settings: dict, seconds: float, finished: bool = True) -> dict:
    return {"benchmark": "fuzz", "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), **settings, "n": tally.cases, "finished": finished,
            "duration_s": round(seconds, 1),
            "counts": {mode: {k: tally.counts[mode][k] for k in CLASSES} for mode in MODES},
            "failures": [failure_json(f) for f in ordered(tally)],
            "operators": dict(tally.operators.most_common()), "clean_codes": dict(tally.codes.most_common())}


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
