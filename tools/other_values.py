#!/usr/bin/env python3
"""Build generated classes at values they were not compiled for, on many random specs: each class,
compiled at a model's defaults, either refuses another value (ValueError) or builds exactly what dslc
builds at it (the same state-dict keys and weights for one seed, a bit-equal forward). A class that
takes a value dslc refuses, or builds something else, is a failure: printed once, with its spec.

The specs take a list of ints (`widths`) and read its items every way the language allows: by
place in sizes and conditions, passed to blocks that walk it, decide on it or read it by place,
walked by the model's own loop, as a repeat count, in residual sums that broadcast (issue #14,
tests/test_list_items.py runs one such spec under hypothesis).

    tools/other_values.py --n 200 --seed 1
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

BLOCKS = '''block Pair(a: int, b: int) {
    input x
    h = x -> Linear(a) -> ReLU()
    output (h -> Linear(b)) if a != b else h + (h -> Linear(a))
}
block Walk(ws: list[int]) {
    for w in ws {
        Linear(w)
        ReLU()
    }
}
block Fixed(ws: list[int]) {
    Linear(ws[0])
    Linear(ws[-1] + 1)
}
'''


def statement(rng, n: int) -> str:
    """One random statement reading `widths` (of `n` items) and the running value `h`."""
    i, j, k = rng.randrange(n), rng.randrange(n), rng.randint(1, 3)
    return rng.choice([
        f"h = h -> Linear(widths[{i}] * {k})",
        f"h = h -> Linear(widths[{i}] + widths[{j}])",
        f"if widths[{i}] > widths[{j}] {{\n        h = h -> ReLU()\n    }}",
        f"if widths[{i}] == {k} {{\n        h = h -> Tanh()\n    }}",
        f"h = h -> Pair(widths[{i}], widths[{j}])",
        "h = h -> Walk(widths)",
        "h = h -> Walk(widths[::-1])",
        "h = h -> Fixed(widths)",
        "for w in widths {\n        h = h -> Linear(w)\n    }",
        f"h = h -> Linear(widths[{i}])\n    h = h + (h -> Linear(widths[{j}]))",
        f"repeat widths[{i}] {{\n        h = h -> Linear(3)\n    }}",
        "h = h -> Linear(len(widths) * 2)",
        f"h = h -> Linear(max(widths[{i}], widths[{j}]))",
    ])


def draw(rng) -> tuple[str, int]:
    """A random spec, and its list's length."""
    n = rng.randint(2, 4)
    default = [rng.randint(1, 4) for _ in range(n)]
    body = "\n    ".join(statement(rng, n) for _ in range(rng.randint(1, 4)))
    return (BLOCKS + f"model M(widths: list[int] = {default}) {{\n    input x: [B, 3]\n    h = x\n"
            f"    {body}\n    output h\n}}\n"), n


def difference(mine, theirs, x) -> str | None:
    """What differs between two built models, or None."""
    import torch
    got, want = mine.state_dict(), theirs.state_dict()
    if list(got) != list(want):
        return f"keys {list(got)[:6]} against {list(want)[:6]}"
    for key, value in want.items():
        if got[key].shape != value.shape or not torch.equal(got[key], value):
            return f"the weight {key}"
    with torch.no_grad():
        return None if torch.equal(mine.eval()(x), theirs.eval()(x)) else "the forward"


def try_values(prog, module, widths: list) -> str:
    """The outcome of building the class at `widths`: built, refused, both refused, or a failure."""
    import torch

    from dslc.diagnostics import DslcError
    try:
        theirs = prog.build("M", seed=0, widths=widths)
    except DslcError:
        theirs = None
    torch.manual_seed(0)
    try:
        mine = module.M(widths=widths)
    except ValueError:
        return "refused" if theirs is not None else "both refused"
    if theirs is None:
        return f"FAILED: took {widths}, which dslc refuses"
    why = difference(mine, theirs, torch.rand(2, 3))
    return f"FAILED: at {widths}, {why} differs" if why else "built"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="random specs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--values", type=int, default=8, help="other lists tried on each spec")
    args = parser.parse_args(argv)
    import torch

    import dslc
    from dslc.diagnostics import DslcError
    torch.set_num_threads(1)
    counts, failures = collections.Counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            rng = random.Random(f"{args.seed}-{i}")
            text, n = draw(rng)
            path = os.path.join(tmp, f"m{i}.dl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            try:
                prog = dslc.load(path)
                module = prog.module(["M"])
            except DslcError:
                counts["spec refused"] += 1
                continue
            for _ in range(args.values):
                widths = [rng.randint(1, 4) for _ in range(rng.choice([n, n, n, n - 1, n + 1]))]
                outcome = try_values(prog, module, widths)
                counts[outcome.split(":")[0]] += 1
                if outcome.startswith("FAILED"):
                    failures.setdefault(outcome.split(", ", 1)[-1], (i, outcome, text))
    print(dict(counts))
    for i, outcome, text in failures.values():
        print(f"\n=== spec {i}: {outcome}\n{text}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
