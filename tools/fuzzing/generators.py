"""Structural generators: whole programs built to stress one limit, which token mutations of the seeds
would rarely reach. Each takes an rng and returns (files, main): files maps paths relative to a
mirror (under _gen/) to their text, main is the one to load.
"""
from __future__ import annotations

import random
from typing import Callable

GEN = "_gen"


def doubling(rng: random.Random):
    """Block A0 applies A1 twice, A1 applies A2 twice, ...: 2**depth layer instances from a few lines."""
    depth = rng.choice([12, 16, 20, 24])
    lines = ["model Doubling {", "    input x: [B, 4]", "    A0()", "}"]
    for i in range(depth):
        lines += [f"block A{i} {{", f"    A{i + 1}()", f"    A{i + 1}()", "}"]
    lines += [f"block A{depth} {{", "    ReLU()", "}"]
    return {f"{GEN}/doubling.dl": "\n".join(lines) + "\n"}, f"{GEN}/doubling.dl"


BROKEN = ["model M{i} {{ Linear( }}", "model M{i} {{\n    input x: [B, 4]\n    Linear(-{i})\n}}",
          "block B{i} {{ Undefined{i}() }}", "model M{i} {{ input x: [B, {i}]\n Conv2d(3, 3) }}",
          "model M{i}(a: int = \"{i}\") {{ input x: [B, 4] }}"]


def broken_declarations(rng: random.Random):
    """5,000 declarations, each with its own error."""
    n = 5000
    form = rng.choice(BROKEN)
    text = "\n".join(form.format(i=i) for i in range(n)) + "\n"
    return {f"{GEN}/broken.dl": text}, f"{GEN}/broken.dl"


def huge_string_default(rng: random.Random):
    """A 10 MB string literal as a parameter's default."""
    size = rng.choice([1 << 20, 10 << 20])
    text = f'model Big(name: str = "{"x" * size}") {{\n    input x: [B, 4]\n    ReLU()\n}}\n'
    return {f"{GEN}/string.dl": text}, f"{GEN}/string.dl"


def import_chain(rng: random.Random):
    """f0 imports f1 imports ... f(n-1), each declaring a block that applies the next one."""
    n = rng.choice([100, 600, 2000])
    files = {}
    for i in range(n):
        body = f'import "f{i + 1}.dl"\nblock B{i} {{\n    B{i + 1}()\n}}\n' if i < n - 1 else ""
        files[f"{GEN}/chain/f{i}.dl"] = body or f"block B{i} {{\n    ReLU()\n}}\n"
    files[f"{GEN}/chain/main.dl"] = 'import "f0.dl"\nmodel Chain {\n    input x: [B, 4]\n    B0()\n}\n'
    return files, f"{GEN}/chain/main.dl"


def block_chain(rng: random.Random):
    """Blocks calling blocks n deep in one file (deep evaluation and deep generated classes)."""
    n = rng.choice([200, 1000, 5000])
    lines = ["model Deep {", "    input x: [B, 4]", "    C0()", "}"]
    for i in range(n):
        lines += [f"block C{i} {{", f"    C{i + 1}()", "}"]
    lines += [f"block C{n} {{", "    Linear(4)", "}"]
    return {f"{GEN}/deep.dl": "\n".join(lines) + "\n"}, f"{GEN}/deep.dl"


def many_layers(rng: random.Random):
    """One model with very many layers, written out or by loops."""
    n = rng.choice([10_000, 100_000])
    if rng.random() < 0.5:   # written out: as long as the 10,000-line benchmark (bench/frontend.py)
        body = "    ReLU()\n" * 10_000
    else:
        body = f"    repeat {n} {{\n        repeat {n} {{\n            ReLU()\n        }}\n    }}\n"
    text = "model Many {\n    input x: [B, 4]\n" + body + "}\n"
    return {f"{GEN}/many.dl": text}, f"{GEN}/many.dl"


GENERATORS: dict[str, Callable] = {
    "doubling": doubling, "broken_declarations": broken_declarations, "huge_string_default": huge_string_default,
    "import_chain": import_chain, "block_chain": block_chain, "many_layers": many_layers,
}
