"""Write examples/language.dl from the ```dl examples of the language contract.

The examples of docs/contract/LANGUAGE.md (a copy of the shared contract) form
one `.dl` file, imports first, that must always check and compile. It is written as
`dslc fmt` lays it out, as every `.dl` file of the repository is.
    python tools/extract_contract.py [--check]
"""
from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import write_or_check  # noqa: E402

from dslc.frontend.fmt import format_source  # noqa: E402

CONTRACT = os.path.join(ROOT, "docs", "contract", "LANGUAGE.md")
OUT = os.path.join(ROOT, "examples", "language.dl")
HEADER = ("# The examples of the language contract (docs/contract/LANGUAGE.md), as one file.\n"
          "# Written by tools/extract_contract.py: edit the contract, not this file.\n")


def extract(markdown: str) -> str:
    blocks = re.findall(r"```dl\n(.*?)```", markdown, re.S)
    imports = [line for b in blocks for line in b.splitlines() if line.startswith("import ")]
    bodies = ["\n".join(line for line in b.splitlines() if not line.startswith("import ")).strip("\n")
              for b in blocks]
    return format_source(HEADER + "\n".join(imports) + "\n\n" + "\n\n".join(bodies) + "\n", OUT)


def main() -> int:
    with open(CONTRACT, encoding="utf-8") as f:
        return write_or_check(OUT, extract(f.read()))


if __name__ == "__main__":
    sys.exit(main())
