"""Shared by the benchmarks: a description of the machine and writing results."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    payload = {"benchmark": name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine(), **payload}
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    return path


def timed_command(cmd: list[str], repeat: int, cwd: str = ROOT) -> dict:
    """Wall-clock seconds of a command, `repeat` times: median and all samples."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        samples.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return {"median_s": statistics.median(samples), "samples_s": [round(s, 4) for s in samples]}


DSLC = [os.path.join(os.path.dirname(sys.executable), "dslc")]  # the installed console command


def alternate(a, b, rounds: int, steps: int) -> tuple[list, list]:
    """Seconds per step of `a.timed(steps)` and `b.timed(steps)` over `rounds` rounds, the order swapped
    every round, so that drifting machine load falls on both sides alike."""
    a_s, b_s = [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        t1, t2 = first.timed(steps), second.timed(steps)
        a_s.append(t1 if first is a else t2)
        b_s.append(t2 if first is a else t1)
    return a_s, b_s
