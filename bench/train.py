"""Epoch time of `dslc train` against a bare hand-written PyTorch loop, same model and data.

Both sides train the same generated model on the same training split, with the same batch size
and optimizer. The dslc side is the trainer's own epoch, with its bookkeeping: loss checks,
the schedule, metrics on the validation split, and the progress display off. Validation is
not timed on either side. The bare side is the loop people write by hand: shuffle, slice,
forward, loss, backward, step. dslc runs twice: with the health checks (`dslc train`'s
default: gradient and weight norms, activations, once per epoch) and with `--watch off`. The
three sides, and a second bare loop as an A/A control (its ratio to the first is the noise
floor), alternate epochs in one process, each going first in turn, and the script reports the
median ratios of both wall-clock time and process (CPU) time. The targets are scored on CPU
time: on a shared machine, wall time also counts the moments another process held the core,
which moved the wall-clock ratio by about ±5% from run to run.

    python bench/train.py            # writes bench/results/train.json

Targets: `--watch off` overhead ≤ 3% (CPU-time ratio off / bare ≤ 1.03); the health checks
cost ≤ 5% (CPU-time ratio on / off ≤ 1.05).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import dslc  # noqa: E402
from dslc.runtime import allocator  # noqa: E402
from dslc.runtime import data as data_mod  # noqa: E402
from dslc.runtime.rundir import RunDir  # noqa: E402
from dslc.runtime.trainer import Options, Trainer  # noqa: E402

# (label, file, plan, batch size, the plan's gradient clipping, its label smoothing)
CASES = [
    ("digits CNN", "examples/digits/digits.dl", "cnn", 64, 1.0, 0.05),
    ("digits MLP", "examples/digits/digits.dl", "mlp", 64, None, 0.0),
]
ROUNDS = 32   # a multiple of 4: each order of the sides as often


def _trainer(path: str, plan_name: str, out: str, watch: bool) -> Trainer:
    prog = dslc.load(path)
    plan = prog.plan(plan_name)
    plan.fields["metrics"] = []          # timed: the training pass only
    plan.calls = []
    t = Trainer(plan, path, Options(out=out, progress=False, watch=watch), lambda s: None)
    t.rundir = RunDir.open(plan.name, out, False)
    t.precision = "fp32"
    plan.fields["precision"] = "fp32"
    t.data = data_mod.load(plan.data.entry.name, dict(plan.data.args))
    t.data.val = None
    t.task = "classification"
    t.augment = data_mod.resolved(t.config.augment, t.data.train, classes=t.data.meta.get("classes"))
    t._build()
    t._callbacks()   # the run's callbacks, as `dslc train` has them (NaN check, signals...)
    t.phases = t._phases()
    t._start_phase(0)
    return t


def _timed(run) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of run()."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def _dslc_epoch(t: Trainer, epoch: int) -> tuple[float, float]:
    return _timed(lambda: t._epoch(epoch, 10_000, 0))   # the callbacks included: the display is off, as in a pipe


def _bare_epoch(model, opt, sched, train: dict, batch_size: int, epoch: int, clip, smoothing) -> tuple[float, float]:
    return _timed(lambda: _bare_loop(model, opt, sched, train, batch_size, epoch, clip, smoothing))


def _bare_loop(model, opt, sched, train: dict, batch_size: int, epoch: int, clip, smoothing) -> None:
    model.train()
    x_all, y_all = train["x"], train["y"]
    g = torch.Generator().manual_seed(epoch)
    order = torch.randperm(len(x_all), generator=g)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        x, y = x_all[idx], y_all[idx]
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()


def bench_case(label: str, path: str, plan_name: str, batch_size: int, clip, smoothing) -> dict:
    torch.set_num_threads(1)
    allocator.keep_freed_memory()   # as Trainer.run sets it (for the whole process: every side)
    with tempfile.TemporaryDirectory() as tmp:
        t = _trainer(os.path.join(ROOT, path), plan_name, os.path.join(tmp, "run"), watch=False)
        watched = _trainer(os.path.join(ROOT, path), plan_name, os.path.join(tmp, "watched"), watch=True)
        bare = [_bare_side(t, batch_size, clip, smoothing) for _ in range(2)]   # the second: A/A control
        sides = [lambda e: _dslc_epoch(t, e), lambda e: _dslc_epoch(watched, e), *bare]
        times = [[] for _ in sides]
        for side in sides:
            side(1)                                            # warm-up, every side
        for r in range(ROUNDS):
            # each side goes first, second, ... in turn: whichever runs after another gets its
            # warm caches (or its garbage), and a fixed order made that a bias of several percent
            for k in range(len(sides)):
                times[(r + k) % len(sides)].append(sides[(r + k) % len(sides)](r + 2))
    ours, health, bare_times, again = times
    out = {"case": label, "batch_size": batch_size, "examples": int(len(t.data.train["x"])), "rounds": ROUNDS}
    for m, measure in enumerate(("wall", "cpu")):
        col = [[x[m] for x in side] for side in times]
        out[measure] = {"dslc_epoch_s": statistics.median(col[0]), "dslc_health_epoch_s": statistics.median(col[1]),
                        "bare_epoch_s": statistics.median(col[2]),
                        "median_ratio_dslc_over_bare": _median_ratio(col[0], col[2]),
                        "median_ratio_health_over_off": _median_ratio(col[1], col[0]),
                        "aa_control_bare_over_bare": _median_ratio(col[3], col[2])}
    return out


def _bare_side(t: Trainer, batch_size: int, clip, smoothing):
    model = _fresh_model(t)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = _plan_schedule(t, opt)
    return lambda e: _bare_epoch(model, opt, sched, t.data.train, batch_size, e, clip, smoothing)


def _median_ratio(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _plan_schedule(t: Trainer, opt):
    """The plan's schedule as a hand-written loop has it, from torch.optim.lr_scheduler, stepped
    after every batch over a run long enough for the benchmark."""
    import math
    sched = t.phases[0].schedule
    total = 100 * data_mod.steps_per_epoch(t.data.train, t.phases[0].batch_size)
    if sched is not None and sched.entry.name == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total,
                                                   pct_start=float(sched.args["pct_start"]))
    if sched is not None and sched.entry.name == "warmup_cosine":
        warm = int(sched.args["warmup"])
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s + 1 <= warm else
                                                 0.5 * (1 + math.cos(math.pi * (s + 1 - warm) / (total - warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def _fresh_model(t: Trainer):
    """An identical, separately built copy of the plan's model, for the bare loop."""
    import copy
    return copy.deepcopy(t.models["model"])


def main() -> None:
    results = []
    for case in CASES:
        r = bench_case(*case)
        results.append(r)
        for measure in ("cpu", "wall"):
            m = r[measure]
            print(f"{r['case']:<12} {measure:<4} dslc --watch off {m['dslc_epoch_s'] * 1000:8.1f} ms/epoch   health on "
                  f"{m['dslc_health_epoch_s'] * 1000:8.1f}   bare loop {m['bare_epoch_s'] * 1000:8.1f}   "
                  f"off/bare {m['median_ratio_dslc_over_bare']:.3f}   on/off {m['median_ratio_health_over_off']:.3f}   "
                  f"A/A {m['aa_control_bare_over_bare']:.3f}")
    out = {"what": "epoch time of dslc train vs a hand-written loop (median of alternating epochs), in wall-clock "
                   "and process CPU time; a second bare loop is the A/A control",
           "target": "CPU time: off / bare <= 1.03, health on / off <= 1.05",
           "load_average_1min": os.getloadavg()[0],
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
           "results": results}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "train.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print("written to bench/results/train.json")


if __name__ == "__main__":
    main()
