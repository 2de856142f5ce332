"""Mutation fuzzing of dslc (issue #11): mutants of every spec, run with time and memory limits.

    .venv/bin/python tools/fuzz.py --n 300 --seed 0
    .venv/bin/python tools/fuzz.py --n 100000 --seed 1 --out fuzz-out --json bench/results/fuzz.json
    .venv/bin/python tools/fuzz.py --seed 0 --case 1234 --show      # one case again, and its text

Seeds are every .dl file of specs/, examples/ and tests/ui/ and the ```dl examples of the guides.
Each case is a seed mutated by one to three operators (tools/fuzzing/mutate.py) or a structural
generator's program (tools/fuzzing/generators.py). It runs in a forked worker: `dslc.load`, the
PyTorch source of every buildable model and, for half of those that load (--deep), build +
forward + ONNX. A sample (--cli) also goes through the `dslc` command in a subprocess. Every
case ends ok, clean (a
diagnostic), internal (any other exception, or exit 3, or a traceback), hang (over --timeout) or
memory (over --memory-mib). Failures are grouped by (class, exception, innermost dslc frame), and
one case of each is minimized. Exit status 1 when anything failed. docs/fuzzing.md has more.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:   # appended: tools/common.py must shadow nothing
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fuzzing.cases import cli_case, make_case  # noqa: E402
from fuzzing.minimize import Minimizer  # noqa: E402
from fuzzing.pool import Limits, Pool  # noqa: E402
from fuzzing.report import Tally, result_json, save_reproducers, table, tree, write_json  # noqa: E402
from fuzzing.seeds import all_seeds, make_mirror  # noqa: E402
from fuzzing.target import api_target, warm_up  # noqa: E402

PROGRESS_EVERY = 30.0   # seconds between progress lines (and partial JSON writes)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300, help="how many cases (default 300)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed: case i depends only on (seed, i)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take (default 10)")
    p.add_argument("--memory-mib", type=int, default=2048, help="memory a case may add, MiB (default 2048)")
    p.add_argument("--deep", type=float, default=0.5, help="fraction of cases also built, run and exported, when "
                                                           "they load (default 0.5)")
    p.add_argument("--cli", type=float, default=0.05, help="fraction of cases also run through the dslc command")
    p.add_argument("--budget", type=float, help="stop starting cases after this many seconds")
    p.add_argument("--min-seconds", type=float, default=60.0, help="time to minimize each distinct failure")
    p.add_argument("--no-minimize", action="store_true", help="report failures as found")
    p.add_argument("--out", help="folder for the reproducers")
    p.add_argument("--json", help="write the result as JSON (e.g. bench/results/fuzz.json)")
    p.add_argument("--case", type=int, help="run only case CASE of this seed")
    p.add_argument("--show", action="store_true", help="with --case: print the case's text and stop")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def cases(args, seeds):
    """The run's cases in order; some are followed by the same files through the command line."""
    indexes = [args.case] if args.case is not None else range(args.n)
    for i in indexes:
        case = make_case(args.seed, i, seeds, deep=args.deep)
        yield case
        rng = random.Random(f"{args.seed}:{i}:cli")
        if rng.random() < args.cli or args.case is not None:
            yield cli_case(case, rng)


def fuzz(args, pool: Pool, seeds, settings: dict) -> tuple[Tally, float]:
    tally, start, last = Tally(), time.monotonic(), time.monotonic()
    work = cases(args, seeds)
    if args.budget is not None:
        work = _until(work, start + args.budget)
    for case, outcome in pool.run(work):
        tally.add(case, outcome)
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            _progress(args, tally, last - start, settings)
    return tally, time.monotonic() - start


def _until(cases, deadline: float):
    for case in cases:
        if time.monotonic() >= deadline:
            return
        yield case


def _progress(args, tally: Tally, elapsed: float, settings: dict) -> None:
    if not args.quiet:
        print(tally.progress_line(elapsed), file=sys.stderr, flush=True)
    if args.json:
        write_json(args.json, result_json(tally, settings, elapsed, finished=False))


def minimize_all(args, pool: Pool, tally: Tally) -> None:
    for f in tally.failures.values():
        m = Minimizer(pool, f.case, f.outcome, args.min_seconds)
        f.reproducer = m.run()
        f.tries = m.tries
        if not args.quiet:
            print(f"minimized {f.outcome.cls} {f.outcome.etype} at {f.outcome.frame or '?'}: "
                  f"{len(f.case.files[f.case.main])} -> {len(f.reproducer)} bytes in {m.tries} cases",
                  file=sys.stderr, flush=True)


def show(args, seeds) -> int:
    case = make_case(args.seed, args.case, seeds, deep=args.deep)
    print(f"# case {case.index} of seed {args.seed}: {case.origin}, {' + '.join(case.operators)}, "
          f"file {case.main}", file=sys.stderr)
    sys.stdout.buffer.write(case.files[case.main])
    return 0


def main(argv=None) -> int:
    """`kill PID` of a run stops its workers and removes its folders (SIGTERM becomes SystemExit)."""
    args = parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return run(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args) -> int:
    seeds = all_seeds()
    if args.show and args.case is not None:
        return show(args, seeds)
    settings = {"tree": tree(), "seed": args.seed, "requested": args.n, "workers": args.workers,
                "time_limit_s": args.timeout, "memory_limit_mib": args.memory_mib, "deep_fraction": args.deep,
                "cli_fraction": args.cli, "seeds": len(seeds)}
    scratch = tempfile.mkdtemp(prefix="dslc-fuzz-")
    try:
        roots = [make_mirror(os.path.join(scratch, f"w{k}"), seeds) for k in range(args.workers)]
        warm_up(roots[0])
        with Pool(roots, api_target, Limits(args.timeout, args.memory_mib << 20)) as pool:
            tally, seconds = fuzz(args, pool, seeds, settings)
            if not args.no_minimize:
                minimize_all(args, pool, tally)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.out:
        save_reproducers(tally, args.out)
    header = (f"dslc fuzz: {tally.cases} cases (seed {args.seed}, {len(seeds)} seeds, tree {settings['tree']}) in "
              f"{seconds:.0f} s on {args.workers} workers; limits {args.timeout:g} s, {args.memory_mib} MiB")
    print(table(tally, header))
    if args.json:
        write_json(args.json, result_json(tally, settings, seconds))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
