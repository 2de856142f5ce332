"""`dslc fmt` (issue #18 item 2): one canonical layout. Checked on small cases written out by
hand, and as properties over every `.dl` file of the repository, random re-spacings of them
and random long expressions: formatting is idempotent, keeps the syntax tree, and does not
depend on the spaces the author typed. Every file of the repository is already formatted."""
from __future__ import annotations

import random
import re
import subprocess
import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT

from dslc.cli import main
from dslc.diagnostics import DslcError, SourceFile
from dslc.frontend import fmt as fmt_module
from dslc.frontend.fmt import WIDTH, FormatError, format_source, format_text, shape, tokenize
from dslc.frontend.parser import parse


def dl(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def tracked() -> list[str]:
    return subprocess.check_output(["git", "ls-files", "*.dl"], cwd=ROOT, text=True).split()


def repo_files() -> list[str]:
    """Every .dl file in the repository that parses (tests/ui holds broken ones on purpose)."""
    out = []
    for name in tracked():
        try:
            with open(f"{ROOT}/{name}", encoding="utf-8") as f:
                text = f.read()
            parse(SourceFile(name, text))
        except Exception:   # noqa: BLE001 - not UTF-8, or a syntax error: not formattable
            continue
        out.append(name)
    return out


FILES = repo_files()


def read(name: str) -> str:
    with open(f"{ROOT}/{name}", encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- the layout, case by case

def test_spaces_and_indentation_are_canonical():
    messy = dl("""
        model  M( hidden:int=128 ,classes : int = 10 ){
          input x:[B,1,8,8]
          h=x->Flatten()->Linear(hidden,bias=true)   ->ReLU( )
          y = h[:, -1 :] * 2**-1 + -h.shape[1]
                output y->Linear( classes )
        }
        """)
    assert format_source(messy) == dl("""
        model M(hidden: int = 128, classes: int = 10) {
            input x: [B, 1, 8, 8]
            h = x -> Flatten() -> Linear(hidden, bias=true) -> ReLU()
            y = h[:, -1:] * 2 ** -1 + -h.shape[1]
            output y -> Linear(classes)
        }
        """)


def test_plan_fields_align_their_equals_per_body():
    plan = dl("""
        train t {
            model = MLP(hidden=256, classes=10)
            data = digits(val=0.15)
            batch_size = 64
            early_stopping(monitor=val_loss, patience=8)
            phase head {
                epochs = 20
                optimizer = Adam(lr=1e-2)
            }
        }
        """)
    assert format_text(plan) == dl("""
        train t {
            model      = MLP(hidden=256, classes=10)
            data       = digits(val=0.15)
            batch_size = 64
            early_stopping(monitor=val_loss, patience=8)
            phase head {
                epochs    = 20
                optimizer = Adam(lr=1e-2)
            }
        }
        """)


def test_model_assignments_are_not_aligned():
    text = dl("""
        model M {
            input x: [B, 4]
            a = x -> Linear(4)
            longer = a + x
            output longer
        }
        """)
    assert format_text(text) == text


def test_a_numbered_layer_in_a_path_keeps_to_its_name():
    text = dl("""
        train t {
            model      = M()
            phase head {
                freeze model.features.0, model.2
                epochs = 1 + .5
            }
        }
        """)
    assert format_text(text) == text
    assert [t.kind for t in tokenize("model.features.0 .5")[1:]] == ["OP", "NAME", "INDEX", "FLOAT"]


def test_comments_stay_where_they_were():
    text = dl("""
        # a file comment

        model M {   # after the brace
            input x: [B, 4]
                # an indented comment line, re-indented with the body
            h = x -> Linear(4)              # aligned by hand
            output h -> ReLU()  # close
        }
        """)
    assert format_text(text) == dl("""
        # a file comment

        model M {   # after the brace
            input x: [B, 4]
            # an indented comment line, re-indented with the body
            h = x -> Linear(4)              # aligned by hand
            output h -> ReLU()  # close
        }
        """)


def test_a_comment_inside_a_statement_keeps_its_line_breaks():
    text = dl("""
        model M {
            input x: [B, 4]
            for w in [4,    # first
                8] {
                x = x -> Linear(w)
            }
            output x
        }
        """)
    assert format_source(text) == dl("""
        model M {
            input x: [B, 4]
            for w in [4,    # first
                      8] {
                x = x -> Linear(w)
            }
            output x
        }
        """)


def test_blank_lines_collapse_and_none_open_or_close_a_body():
    text = "model M {\n\n    input x: [B, 4]\n\n\n\n    output x\n\n}\n\n\n\nmodel N {\n    input x: [B, 4]\n    output x\n}\n\n"
    assert format_text(text) == ("model M {\n    input x: [B, 4]\n\n    output x\n}\n\n"
                                 "model N {\n    input x: [B, 4]\n    output x\n}\n")


def test_long_lines_wrap_after_a_comma_aligned_after_the_bracket():
    params = ", ".join(f"p{i}: int = {i}" for i in range(12))
    out = format_source(f"model M({params}) {{\n    input x: [B, 4]\n    output x\n}}\n")
    lines = out.splitlines()
    assert lines[0].startswith("model M(p0: int = 0, ") and all(len(line) <= WIDTH for line in lines)
    assert lines[1].startswith(" " * len("model M(") + "p")       # continued after the bracket
    assert lines[1].endswith(") {") and lines[2] == "    input x: [B, 4]"


def test_a_long_pipe_breaks_after_an_arrow():
    stages = " -> ".join(f"Linear({i + 10}) as layer_number_{i}" for i in range(5))
    out = format_source(f"model M {{\n    input x: [B, 4]\n    output x -> {stages}\n}}\n")
    code = out.splitlines()[2:-1]
    assert len(code) > 1 and all(line.rstrip().endswith("->") for line in code[:-1])
    assert all(len(line) <= WIDTH for line in code) and code[1].startswith(" " * 8)


def test_a_long_conditional_breaks_before_if_and_else_in_added_parentheses():
    """The statement's own level has no place to break (the parser reads on only after `->`):
    the formatter adds parentheses around the expression and breaks at its loosest operator,
    not just inside `(x ->`."""
    text = dl("""
        block B(out: int, stride: int = 1) {
            input x
            skip = (x -> Downsample(out, stride=stride) as downsample) if stride != 1 or x.shape[1] != out else x
            output skip
        }
        """)
    assert format_source(text).splitlines()[2:5] == [
        "    skip = ((x -> Downsample(out, stride=stride) as downsample)",
        "            if stride != 1 or x.shape[1] != out",
        "            else x)"]


def test_a_long_sum_breaks_after_its_operator_not_inside_a_term():
    text = dl("""
        model GPT(vocab: int = 50257, context: int = 1024, dim: int = 768) {
            input tokens: [B, T] of int64
            x = (tokens -> Embedding(vocab, dim) as wte) + (positions(tokens) -> Embedding(context, dim) as wpe)
            output x
        }
        """)
    assert format_source(text).splitlines()[2:4] == [
        "    x = ((tokens -> Embedding(vocab, dim) as wte) +",
        "         (positions(tokens) -> Embedding(context, dim) as wpe))"]


def test_added_parentheses_only_where_they_break_better():
    """A pipe inside parentheses breaks there, aligned after them, when parentheses around the
    whole would take more lines; a top-level pipe breaks after its own `->`, four spaces in; an
    `output` of two values is never parenthesized (that would make a tuple), and stays long
    when nothing else can break."""
    text = dl("""
        block E(ff: int, dim: int, dropout: float = 0.1) {
            input h
            if true {
                output h + (h -> LayerNorm(eps=1e-12) -> Linear(ff) -> GELU() -> Linear(dim) -> Dropout(dropout))
            }
            g = h -> Conv2d(dim, 3, stride=2, padding=1, bias=false) as conv1 -> BatchNorm2d() as bn1 -> ReLU() -> Linear(dim)
            output h * 2 + h * 3 + h * 4 + h * 5 + h * 6 + h * 7 + h * 8 + h * 9 + h * 10 + h * 11 + h * 12, g
        }
        """)
    assert format_source(text).splitlines()[3:9] == [
        "        output h + (h -> LayerNorm(eps=1e-12) -> Linear(ff) -> GELU() -> Linear(dim) ->",
        "                    Dropout(dropout))",
        "    }",
        "    g = h -> Conv2d(dim, 3, stride=2, padding=1, bias=false) as conv1 -> BatchNorm2d() as bn1 ->",
        "        ReLU() -> Linear(dim)",
        "    output h * 2 + h * 3 + h * 4 + h * 5 + h * 6 + h * 7 + h * 8 + h * 9 + h * 10 + h * 11 + h * 12, g"]


def test_a_deeper_break_wins_when_it_saves_a_line():
    text = dl("""
        block M(out: int, expand: int, k: int, stride: int = 1) {
            input x
            h = x -> ExpandDepthwiseProject(x.shape[1] * expand, out, expand, k, stride, max(1, x.shape[1] // 4)) as block
            output h
        }
        """)
    assert format_source(text).splitlines()[2:4] == [
        "    h = x -> ExpandDepthwiseProject(x.shape[1] * expand, out, expand, k, stride,",
        "                                    max(1, x.shape[1] // 4)) as block"]


def test_a_calls_arguments_start_on_the_next_line_when_that_breaks_less():
    """Four spaces in, when after the bracket they would need a deeper break, or would split
    the arguments of a call that is called in turn."""
    text = dl("""
        block E(dim: int, heads: int, dropout: float = 0.1) {
            input x
            if true {
                h = LayerNorm(eps=1e-12)(x + Dropout(dropout)(MultiheadAttention(dim, heads, dropout=dropout)(x, x, x)))
                for level in range(3) {
                    h = ResnetBlock(base * mults[level], true, groups, dropout)(concat([h, skips[-1]], dim=1), temb)
                }
                output h
            }
        }
        """)
    lines = format_source(text).splitlines()
    assert lines[3:5] == [
        "        h = LayerNorm(eps=1e-12)(",
        "            x + Dropout(dropout)(MultiheadAttention(dim, heads, dropout=dropout)(x, x, x)))"]
    assert lines[6:8] == [
        "            h = ResnetBlock(base * mults[level], true, groups, dropout)(",
        "                concat([h, skips[-1]], dim=1), temb)"]


def test_plan_fields_align_as_the_docs_write_them():
    """A `train` body at `batch_size`'s column, a name longer than 12 characters with one space,
    a phase at its own longest name, a sweep and its space (dotted names) aligned, a step's
    assignments (computations) not; `model(x)` in a step is a call."""
    text = dl("""
        train t {
            model = M()
            data = digits(val=0.1)
            clip_grad_norm = 1.0
            phase head {
                epochs = 1
                optimizer = Adam(lr=1e-3)
            }
            step s {
                z = model (batch.x)
                loss = cross_entropy(z, batch.y)
                optimizer = Adam(model, lr=1e-3)
            }
        }

        sweep s {
            plan = t
            trials = 4
            space {
                optimizer.lr = loguniform(1e-4, 1e-1)
                dropout = uniform(0, 0.5)
            }
        }
        """)
    assert format_source(text) == dl("""
        train t {
            model      = M()
            data       = digits(val=0.1)
            clip_grad_norm = 1.0
            phase head {
                epochs    = 1
                optimizer = Adam(lr=1e-3)
            }
            step s {
                z = model(batch.x)
                loss = cross_entropy(z, batch.y)
                optimizer = Adam(model, lr=1e-3)
            }
        }

        sweep s {
            plan   = t
            trials = 4
            space {
                optimizer.lr = loguniform(1e-4, 1e-1)
                dropout      = uniform(0, 0.5)
            }
        }
        """)


def test_a_dict_and_a_body_are_told_apart():
    text = "train g {\n    models = { G: Gen(), D: Disc() }\n    init = {backbone:\"x.pt\"}\n}\n"
    assert format_text(text) == ('train g {\n    models     = {G: Gen(), D: Disc()}\n'
                                 '    init       = {backbone: "x.pt"}\n}\n')


def test_a_one_line_body_stays_on_one_line():
    text = "model M {\n    input x: [B, 4]\n    repeat 2 {x = x -> Linear(4)}\n    output x\n}\n"
    assert format_text(text).splitlines()[2] == "    repeat 2 { x = x -> Linear(4) }"


def test_a_change_of_meaning_is_refused(monkeypatch, tmp_path):
    """The safety net: were a bug to change the tree, nothing is written."""
    path = tmp_path / "m.dl"
    original = "model M {\n    input x: [B, 4]\n    output x -> Linear(4)\n}\n"
    path.write_text(original)
    monkeypatch.setattr(fmt_module, "format_text", lambda text: text.replace("Linear(4)", "Linear(5)"))
    with pytest.raises(FormatError):
        format_source(original)
    r = CliRunner().invoke(main, ["fmt", str(path)])
    assert r.exit_code == 1 and "would change what the file means" in r.output
    assert path.read_text() == original


# ---------------------------------------------------------------- properties over the repository's files

# Files whose exact layout is what a test checks, so that formatting them would defeat it.
LAYOUT_IS_THE_TEST = {
    # a line indented by a tab: the diagnostic must expand it and keep the caret under the string
    "tests/ui/terminal_escapes.dl",
}


def test_every_file_in_the_repository_is_formatted():
    unformatted = [name for name in FILES if name not in LAYOUT_IS_THE_TEST
                   and format_source(read(name), name) != read(name)]
    assert not unformatted, "not formatted; run `dslc fmt FILE` on: " + " ".join(unformatted)
    for name in LAYOUT_IS_THE_TEST:   # still there, still parsing, still needing the exception
        assert name in FILES and format_source(read(name), name) != read(name), name


def test_statements_are_what_two_layouts_of_a_file_share():
    """`statements` (how a resumed run's plan.dl is compared with the plan): one line a statement,
    canonically spaced, whatever the layout; comments and blank lines dropped."""
    plain = dl("""
        # a plan.dl as dslc wrote it before `dslc fmt`
        train p {
            model = Small()
            optimizer = Adam(lr=0.003, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=false, lr_mult=none)
            batch_size = 64

            phase warm {
                freeze model.features.0
                epochs = 1
            }
        }
        """)
    laid_out = format_source(plain)
    assert laid_out != plain and "    optimizer  = Adam(" in laid_out
    want = ["train p {", "    model = Small()",
            "    optimizer = Adam(lr=0.003, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=false, "
            "lr_mult=none)", "    batch_size = 64", "    phase warm {", "        freeze model.features.0",
            "        epochs = 1", "    }", "}"]
    assert fmt_module.statements(plain) == fmt_module.statements(laid_out) == want
    assert fmt_module.statements(plain.replace("lr=0.003", "lr = 0.003")) == want
    with pytest.raises(FormatError):
        fmt_module.statements("train p {\n    seed = 0 \x01\n}\n")


def doc_blocks() -> list[tuple[str, int, str]]:
    """Each ```dl block of the guides (docs/*.md, README.md, examples/**/README.md): its file, the
    line of its fence, and its text (dedented when the block sits in a list item)."""
    names = subprocess.check_output(["git", "ls-files", ":(glob)docs/*.md", "README.md", ":(glob)examples/**/README.md"],
                                    cwd=ROOT, text=True).split()
    out = []
    for name in names:
        text = read(name)
        for m in re.finditer(r"^( *)```dl\n(.*?)^\1```$", text, re.S | re.M):
            block = textwrap.dedent(m.group(2)) if m.group(1) else m.group(2)
            out.append((name, text.count("\n", 0, m.start()) + 1, block))
    return out


def parses(text: str) -> bool:
    try:
        parse(SourceFile("<doc>", text))
    except DslcError:
        return False
    return True


# Examples whose layout is what they show, by file and first line: the formatter would join
# the lines that show how a statement continues onto the next one.
DOCS_LAYOUT_IS_THE_POINT = {("docs/language.md", "model Wide {\n    input x: [B,\n")}
# what a whole file's declarations start with (grammars/dl.lark's _decl)
_DECLARATION = re.compile(r"(import|model|block|train|sweep) |loss \w+ =")


def fragment(block: str) -> bool:
    """Not a whole file: `...` for what the text leaves out, or a body's statements shown alone
    (a `step`, a `phase`, a plan's fields, a model's statements)."""
    code = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return "..." in block or not code or not _DECLARATION.match(code[0])


def test_every_whole_dl_example_of_the_docs_is_formatted():
    blocks = doc_blocks()
    unformatted, kept = [], set()
    for name, line, block in blocks:
        allowed = [k for k in DOCS_LAYOUT_IS_THE_POINT if k[0] == name and block.startswith(k[1])]
        if not parses(block):
            assert fragment(block), f"{name}:{line} is a whole file, but it does not parse"
        elif allowed:
            kept.update(allowed)
            assert format_source(block, name) != block, f"{name}:{line} is formatted: drop its exception"
        elif format_source(block, name) != block:
            unformatted.append(f"{name}:{line}")
    assert not unformatted, "```dl examples that are whole files but not formatted: " + " ".join(unformatted)
    assert kept == DOCS_LAYOUT_IS_THE_POINT
    assert sum(parses(b) for _, _, b in blocks) >= 20     # the whole files are most of the examples


def test_the_files_left_unformatted_for_not_parsing_are_error_inputs():
    """A .dl file that does not parse is skipped above only as a diagnostic test's input: it
    sits in tests/ui beside the stderr it must produce, and that stderr reports an error."""
    broken = sorted(set(tracked()) - set(FILES))
    assert broken
    for name in broken:
        assert name.startswith("tests/ui/"), name
        with open(f"{ROOT}/{name[:-3]}.stderr", encoding="utf-8") as f:
            assert "error[" in f.read(), name


@pytest.mark.parametrize("name", FILES)
def test_every_file_formats_idempotently_with_the_same_tree(name):
    text = read(name)
    once = format_source(text, name)              # raises if the tree changed
    assert format_text(once) == once
    assert shape(parse(SourceFile(name, once))) == shape(parse(SourceFile(name, text)))


def _respaced(text: str, rng: random.Random) -> str:
    """The same tokens with other spaces between them (comments dropped: their column is kept
    from the source, so it is the one layout choice the author's spaces make)."""
    out, line = [], []
    for tok in tokenize(text):
        if tok.kind == "NL":
            out.append("".join(line) + "\n")
            line = []
        elif tok.kind != "COMMENT":
            line.append(" " * rng.choice([0, 0, 1, 1, 2, 3]) if line else " " * rng.randrange(0, 9))
            line.append(tok.text)
            if tok.kind in ("NAME", "INT", "FLOAT") or tok.text == "not":
                line.append(" ")   # two words never glue into one
    return "".join(out) + "".join(line)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FILES), st.integers(0, 2 ** 32 - 1))
def test_the_layout_does_not_depend_on_the_authors_spaces(name, seed):
    text = read(name)
    canonical = format_source(_respaced(text, random.Random(0)), name)
    assert format_source(_respaced(text, random.Random(seed)), name) == canonical
    assert format_text(canonical) == canonical


def _expressions():
    """Random expressions of the kinds long lines are made of: sums and comparisons, conditionals,
    pipes in parentheses, calls and lists, nested."""
    leaves = st.sampled_from(["x", "h", "tokens", "stride", "dim", "positions(tokens)", "x.shape[1]", "2"])
    layers = st.sampled_from(["Linear(dim)", "Conv2d(dim, 3, stride=stride) as conv", "ReLU()",
                              "Embedding(1000, dim) as embedding"])
    ops = st.sampled_from(["+", "-", "*", "/", "//", "or", "and", "!=", "=="])

    def grow(e):
        return st.one_of(
            st.tuples(e, ops, e).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(e, e, e).map(lambda t: f"({t[0]}) if ({t[1]}) else {t[2]}"),
            st.tuples(e, layers).map(lambda t: f"({t[0]} -> {t[1]})"),
            st.lists(e, min_size=1, max_size=4).map(lambda a: "f(" + ", ".join(a) + ")"),
            st.lists(e, min_size=1, max_size=4).map(lambda a: "[" + ", ".join(a) + "]"))
    return st.recursive(leaves, grow, max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(_expressions(), st.sampled_from(["y = ", "output ", "a, b = ", "y = x -> "]), st.booleans())
def test_long_random_expressions_break_idempotently_with_the_same_tree(expr, head, nested):
    body = f"    {head}{expr}"
    if nested:
        body = "    if true {\n    " + body + "\n    }"
    text = f"block M(dim: int, stride: int = 1) {{\n    input x\n{body}\n    output x\n}}\n"
    once = format_source(text)                    # raises if the tree changed
    assert format_text(once) == once
    assert format_source(_respaced(text, random.Random(len(expr)))) == once


# ---------------------------------------------------------------- the command

def test_check_and_diff_change_nothing_and_exit_1(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text("model M{\n  input x:[B,4]\n  output x\n}\n")
    before = path.read_text()
    r = CliRunner().invoke(main, ["fmt", "--check", str(path)])
    assert r.exit_code == 1 and r.output.startswith("not formatted:") and path.read_text() == before
    r = CliRunner().invoke(main, ["fmt", "--diff", str(path)])
    assert r.exit_code == 1 and "+model M {" in r.output and "-model M{" in r.output and path.read_text() == before
    r = CliRunner().invoke(main, ["fmt", str(path)])
    assert r.exit_code == 0 and r.output.startswith("formatted") and path.read_text() == \
        "model M {\n    input x: [B, 4]\n    output x\n}\n"
    r = CliRunner().invoke(main, ["fmt", "--check", str(path)])
    assert r.exit_code == 0 and "already formatted" in r.output


def test_a_file_that_does_not_parse_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "bad.dl"
    path.write_text("model M {\n    input x: [B, 4]\n    output x -> Linear(4\n")
    before = path.read_text()
    r = CliRunner().invoke(main, ["fmt", str(path), str(tmp_path / "missing.dl")])
    assert r.exit_code == 1 and "E0104" in r.output and "E0901" in r.output and "Traceback" not in r.output
    assert path.read_text() == before
