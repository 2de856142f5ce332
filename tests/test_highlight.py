"""Highlighting (issue #18 item 3): the Pygments lexer, found through its entry point, reads every
`.dl` file of the repository without an error token and gives its text back whole; it names
keywords from the grammar and layers from the registry; the VS Code grammar is generated from
the same lists and is current."""
from __future__ import annotations

import json
import os
import re
import sys

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name, Number
from support import ROOT
from test_fmt import FILES, read

from dslc.backends.highlight import DlLexer

sys.path.append(os.path.join(ROOT, "tools"))
import gen_editors  # noqa: E402


def test_pygments_finds_the_lexer_by_name_and_by_file_name():
    assert isinstance(get_lexer_by_name("dl"), DlLexer)
    assert isinstance(get_lexer_for_filename("resnet.dl"), DlLexer)


@pytest.mark.parametrize("name", FILES)
def test_every_file_lexes_whole_without_an_error_token(name):
    text = read(name)
    toks = list(DlLexer().get_tokens(text))
    assert not [v for t, v in toks if t in Error]
    assert "".join(v for _, v in toks) == (text if text.endswith("\n") else text + "\n")   # Pygments ends it


def test_what_each_word_is():
    toks = [(t, v) for t, v in DlLexer().get_tokens(
        "model Net(h: int = 8) {\n    input x: [B, 4] of float32\n    y = x -> Linear(h) -> mine(2.5e-3)\n"
        "    output y if true else x\n}\n") if v.strip()]
    kinds = dict((v, t) for t, v in toks)
    assert kinds["model"] in Keyword.Declaration and kinds["Net"] in Name.Class
    assert kinds["input"] in Keyword and kinds["of"] in Keyword and kinds["if"] in Keyword
    assert kinds["float32"] in Keyword.Type and kinds["true"] in Keyword.Constant
    assert kinds["Linear"] in Name.Builtin and kinds["mine"] in Name.Function and kinds["x"] is Name
    assert kinds["2.5e-3"] in Number.Float and kinds["4"] in Number.Integer


def test_the_vscode_grammar_is_current_and_its_patterns_compile():
    with open(gen_editors.PATH, encoding="utf-8") as f:
        assert f.read() == gen_editors.text(), "run tools/gen_editors.py"
    grammar = json.loads(gen_editors.text())
    for p in grammar["patterns"]:
        re.compile(p["match"])          # the subset of Oniguruma they use is Python's too
    support = next(p for p in grammar["patterns"] if p.get("name") == "support.function.dl")
    assert re.search(support["match"], "x -> Conv2d(3)") and not re.search(support["match"], "Conv2dx")


def test_the_vscode_extension_declares_the_grammar_and_configuration():
    base = os.path.join(ROOT, "editors", "vscode")
    with open(os.path.join(base, "package.json"), encoding="utf-8") as f:
        package = json.load(f)
    (lang,), (grammar,) = package["contributes"]["languages"], package["contributes"]["grammars"]
    assert lang["extensions"] == [".dl"] and grammar["scopeName"] == "source.dl"
    for path in (lang["configuration"], grammar["path"]):
        assert os.path.isfile(os.path.join(base, path))
    with open(os.path.join(base, "language-configuration.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["comments"]["lineComment"] == "#" and ["{", "}"] in config["brackets"]
