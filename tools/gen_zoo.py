"""Write docs/zoo.md from specs/: one row per model with its parameters, MACs, inputs and
a link to its diagram, and draw the diagrams into docs/zoo/ (SVG).

    python tools/gen_zoo.py            # rewrite docs/zoo.md and every SVG
    python tools/gen_zoo.py --check    # exit 1 when docs/zoo.md is stale or a diagram is missing

Every figure comes from dslc's own checker and summary; the tests compare those with
hand-written PyTorch twins and published counts (tests/test_specs.py).
"""
from __future__ import annotations

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_or_check  # noqa: E402

OUT = os.path.join(ROOT, "docs", "zoo.md")
SVG_DIR = os.path.join(ROOT, "docs", "zoo")
# models whose parameters have no defaults: the values the zoo shows them with
ARGUMENTS = {("mlp.dl", "MLP"): {"hidden": 256, "classes": 10}}


def _first_comment(path: str) -> str:
    """The spec file's opening comment, first sentence: what the file holds."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    text = " ".join(x for x in lines if x)
    m = re.match(r"(.+?\.)(\s|$)", text)
    return (m.group(1) if m else text).replace("|", "\\|")


def _count(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _macs(value) -> str:
    if isinstance(value, int):
        return _count(value)
    from dslc.backends.summary import macs_value
    return f"`{macs_value(value)}`"   # depends on a run-time size such as T


def rows() -> list[tuple]:
    import dslc
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl"))):
        file = os.path.basename(path)
        prog = dslc.load(path)
        for name in prog.models:
            decl = prog.unit.decls[name]
            if decl.span.file.name != prog.unit.root.name:
                continue   # an imported model is listed under its own file
            params = ARGUMENTS.get((file, name), {})
            graph = prog.graph(name, **params)
            summary = prog.summary(name, **params)
            inputs = ", ".join(f"{n}: {graph.type_of(r)}" for n, r in graph.inputs)
            out.append((file, name, params, summary.total_params, summary.macs, inputs, _first_comment(path)))
    return out


def svg_name(file: str, model: str) -> str:
    return f"{file[:-3]}-{model}.svg"


def text(table: list[tuple]) -> str:
    lines = ["# The model zoo", "",
             "Written by `tools/gen_zoo.py` from [specs/](../specs/): edit the specs, not this file.",
             "Each model is checked against a hand-written PyTorch twin, and against the published",
             "parameter count where there is one (`tests/test_specs.py`). It also exports to ONNX",
             "with onnxruntime parity (`tests/test_onnx_models.py`). MACs are counted at batch 1",
             "the way torchvision's tables count them; sizes known only at run time stay symbolic.",
             "", "| spec | model | parameters | MACs | inputs | diagram |", "| --- | --- | ---: | ---: | --- | --- |"]
    for file, name, params, total, macs, inputs, _ in table:
        shown = name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
        lines.append(f"| [{file}](../specs/{file}) | `{shown}` | {total:,} | {_macs(macs)} | `{inputs}` | "
                     f"[svg](zoo/{svg_name(file, name)}) |")
    lines += ["", "## The files", ""]
    seen = set()
    for file, *_rest, about in table:
        if file not in seen:
            seen.add(file)
            lines.append(f"- [{file}](../specs/{file}): {about}")
    return "\n".join(lines) + "\n"


def draw(table: list[tuple]) -> None:
    import dslc
    from dslc.backends.diagram import render
    os.makedirs(SVG_DIR, exist_ok=True)
    wanted = set()
    for file, name, params, *_ in table:
        prog = dslc.load(os.path.join(ROOT, "specs", file))
        out = os.path.join(SVG_DIR, svg_name(file, name))
        render(prog.diagram(name, **params), out)
        wanted.add(os.path.basename(out))
    for stale in set(os.listdir(SVG_DIR)) - wanted:
        os.remove(os.path.join(SVG_DIR, stale))


def main() -> int:
    table = rows()
    if "--check" in sys.argv:
        missing = [svg_name(f, m) for f, m, *_ in table if not os.path.exists(os.path.join(SVG_DIR, svg_name(f, m)))]
        if missing:
            print("missing diagrams: " + ", ".join(missing), file=sys.stderr)
            return 1
        return write_or_check(OUT, text(table))
    draw(table)
    return write_or_check(OUT, text(table))


if __name__ == "__main__":
    sys.exit(main())
