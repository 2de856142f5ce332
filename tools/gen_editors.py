"""Writes editors/vscode/syntaxes/dl.tmLanguage.json, the TextMate grammar of the VS Code
extension, from the lists the Pygments lexer uses (dslc/backends/highlight.py): keywords from
the grammar, names from the registry. tests/test_highlight.py checks the file is current."""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dslc.backends.highlight import (  # noqa: E402
    CONSTANTS,
    DECLARATIONS,
    FLOAT,
    OPERATORS,
    STRING,
    library_names,
    word_keywords,
)
from dslc.ir.types import DTYPES  # noqa: E402

PATH = os.path.join(ROOT, "editors", "vscode", "syntaxes", "dl.tmLanguage.json")


def alternatives(names) -> str:
    return r"\b(?:" + "|".join(sorted(names, key=lambda w: (-len(w), w))) + r")\b"


def grammar() -> dict:
    patterns = [
        {"name": "comment.line.number-sign.dl", "match": r"#.*$"},
        {"name": "string.quoted.dl", "match": STRING},
        {"match": r"\b(" + "|".join(DECLARATIONS) + r")\s+([A-Za-z_]\w*)",
         "captures": {"1": {"name": "storage.type.dl"}, "2": {"name": "entity.name.type.dl"}}},
        {"name": "keyword.control.dl", "match": alternatives(word_keywords())},
        {"name": "constant.language.dl", "match": alternatives(CONSTANTS)},
        {"name": "storage.type.dtype.dl", "match": alternatives(DTYPES)},
        {"name": "support.function.dl", "match": alternatives(library_names())},
        {"name": "entity.name.function.dl", "match": r"\b[A-Za-z_]\w*(?=\s*\()"},
        {"name": "constant.numeric.float.dl", "match": FLOAT},
        {"name": "constant.numeric.integer.dl", "match": r"\b\d+\b"},
        {"name": "keyword.operator.dl", "match": OPERATORS},
    ]
    return {"$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
            "name": "dslc", "scopeName": "source.dl", "fileTypes": ["dl"], "patterns": patterns}


def text() -> str:
    return json.dumps(grammar(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    with open(PATH, "w", encoding="utf-8") as f:
        f.write(text())
    print(f"wrote {os.path.relpath(PATH, ROOT)}")
