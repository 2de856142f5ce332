#!/usr/bin/env python3
"""Run the soundness property of tests/soundness.py on many random specs (the suite runs a few):
every spec that checks runs in PyTorch and agrees with onnxruntime; every other one gets a
diagnostic. Prints the outcome counts and each distinct failure once, with its spec. With
--steps, each spec is one random layer applied in a plan's step instead: it runs there, or it is
one plan.py would hold as a module of the step and `check` refuses it (E0513).

    tools/soundness.py --n 2000 --seed 1 [--steps] [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the counts and failures here")
    parser.add_argument("--steps", action="store_true", help="layers in a plan's step, not chains in a model")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    counts, failures = collections.Counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        path = _Path(os.path.join(tmp, "random.dl"))
        for i in range(args.n):
            spec, run = _draw(random.Random(f"{args.seed}-{i}"), args.steps)
            try:
                counts.update(run(spec, path))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                counts["FAILED"] += 1
                key = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                failures.setdefault(key, {"case": i, "spec": spec.text,
                                          "trace": traceback.format_exc(limit=-3)})
    print(json.dumps(dict(counts), indent=1))
    for key, f in failures.items():
        print(f"\n=== {key} (case {f['case']})\n{f['spec']}{f['trace']}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"n": args.n, "seed": args.seed, "counts": dict(counts), "failures": failures}, out, indent=1)
    return 1 if failures else 0


def _draw(rng, steps: bool):
    """A random spec and what checks it, which gives the outcomes to count."""
    from soundness import LAYERS, RandomDrawer, check_spec, check_step_spec, draw_spec, draw_step_spec
    if not steps:
        def run(spec, path):
            result = check_spec(spec, path)
            return [result.outcome] + ([f"onnx {result.onnx}"] if result.onnx else [])
        return draw_spec(RandomDrawer(rng)), run
    op = rng.choice(LAYERS)

    def run_step(spec, path):
        outcome = check_step_spec(spec, path)
        assert outcome != "E0513" or op.is_module(named=False), f"{op.name} is refused, but plan.py calls a function"
        return [outcome]
    return draw_step_spec(op, RandomDrawer(rng)), run_step


class _Path(str):
    def write_text(self, text: str) -> None:
        with open(self, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
