"""Syntax highlighting of `.dl` text: a Pygments lexer (registered as the entry point
`pygments.lexers: dl`, so `pygmentize -l dl` and any Pygments user find it) and the TextMate
grammar of the VS Code extension in editors/vscode (written by tools/gen_editors.py from the
same lists). Keywords come from the grammar and layer, function and loss names from the
registry, so neither list is restated here.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

from ..frontend.fmt import FLOAT, OPERATORS, PUNCTUATION, STRING
from ..frontend.parser import keywords
from ..ir.types import DTYPES
from ..ops import REGISTRY

CONSTANTS = ("true", "false", "none", "True", "False", "None", "inf", "pi", "e")
DECLARATIONS = ("model", "block", "loss", "train")


def word_keywords() -> list[str]:
    """The language's keywords other than its constants and declarations, longest first."""
    return sorted(keywords() - set(CONSTANTS) - set(DECLARATIONS), key=lambda w: (-len(w), w))


def library_names() -> list[str]:
    """The registry's names a spec may call (layers, functions, losses)."""
    return sorted(n for n, op in REGISTRY.items() if not op.internal)


class DlLexer(RegexLexer):
    """The `.dl` model-description language of dslc."""

    name = "dslc"
    aliases = ["dl", "dslc"]
    filenames = ["*.dl"]
    mimetypes = ["text/x-dslc"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (STRING, String),
            (r"(%s)(\s+)([A-Za-z_]\w*)" % "|".join(DECLARATIONS), bygroups(Keyword.Declaration, Whitespace,
                                                                             Name.Class)),
            (words(tuple(word_keywords()), suffix=r"\b"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(DTYPES, suffix=r"\b"), Keyword.Type),
            (words(tuple(library_names()), suffix=r"\b"), Name.Builtin),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),
            (r"[A-Za-z_]\w*", Name),
            (FLOAT, Number.Float),
            (r"\d+", Number.Integer),
            (OPERATORS, Operator),
            (PUNCTUATION, Punctuation),
        ],
    }
