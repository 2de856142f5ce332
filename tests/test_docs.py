"""Documentation that is generated must be current, and the hand-written guide's
complete examples must check."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from support import ROOT

import dslc


def test_reference_is_generated_from_the_registries():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_reference.py"), "--check"])
    assert r.returncode == 0, "docs/reference.md is stale: run tools/gen_reference.py"


def test_every_layer_and_function_is_in_the_reference():
    from dslc.ops import REGISTRY
    with open(os.path.join(ROOT, "docs", "reference.md"), encoding="utf-8") as f:
        text = f.read()
    missing = [n for n, op in REGISTRY.items() if not op.internal and f"`{n}(" not in text]
    assert not missing


def test_complete_guide_examples_check(tmp_path):
    """Each ```dl example of docs/language.md that declares a whole model or plan checks
    (together with the contract file, whose blocks they use)."""
    with open(os.path.join(ROOT, "docs", "language.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```dl\n(.*?)```", f.read(), re.S)
    whole = [b for b in blocks if re.match(r"\s*(model|train) \w+", b) and b.rstrip().endswith("}")]
    assert len(whole) >= 4
    for i, block in enumerate(whole):
        name = re.match(r"\s*(?:model|train) (\w+)", block).group(1)
        src = tmp_path / f"guide{i}.dl"
        src.write_text(f'import "{os.path.join(ROOT, "specs", "mlp.dl")}"\n' + block.replace(name, f"Guide{i}", 1),
                       encoding="utf-8")
        if "Generator" in block:
            text = src.read_text(encoding="utf-8")
            src.write_text('import "' + os.path.join(ROOT, "specs", "gan.dl") + '"\n' + text, encoding="utf-8")
        dslc.load(str(src))


def test_the_zoo_page_is_current():
    """docs/zoo.md and its diagrams are generated from specs/ (tools/gen_zoo.py)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_zoo.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, "docs/zoo.md is stale: run python tools/gen_zoo.py " + out.stderr


def test_the_codegen_page_is_current():
    """docs/codegen.md shows what the code generator writes now, and the line counts of every zoo model
    against its twin (tools/gen_codegen.py)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_codegen.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, "docs/codegen.md is stale: run python tools/gen_codegen.py " + out.stderr
