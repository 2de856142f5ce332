"""Guards on one size that repeat with a period print as remainders (`size % 4 == 0`, not
`size == 4 * ((size - 1) // 2 // 2) + 4`), a guard another one implies is dropped, and a check whose
other outcome is an error (a concat's other dims, a reshape's element count) is a requirement of
the spec with its position (`needs ... (ddpm.dl:98)`), not a value the class was compiled for.

The references are Python's own evaluation of the guard as first written (for the printed form and
for what an implication drops), dslc's refusal of the spec at a value the requirement excludes,
and dslc's build of the spec at another value (for the generated class compiled at the defaults).
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT

import dslc
from dslc.diagnostics import DslcError
from dslc.ir.dims import Guard, Param, Poly, residue_form, without_implied

torch.set_num_threads(1)
SPECS = os.path.join(ROOT, "specs")
X = Poly.atom(Param("x"))
OPS = ("==", "!=", "<", "<=", ">", ">=")


def _c(n: int) -> Poly:
    return Poly.const(n)


def _agree(g: Guard, source: str, values=range(-150, 251)) -> None:
    """The guard as printed holds exactly where `source` (the guard as first written) does."""
    printed = g.to_python()
    mine, theirs = compile(printed, "printed", "eval"), compile(source, "source", "eval")
    for x in values:
        assert eval(mine, {"x": x}) == eval(theirs, {"x": x}), (printed, source, x)


def test_the_zoo_guards_read_as_remainders():
    size = Poly.atom(Param("size"))
    half = (size - _c(1)).floordiv(_c(2))
    ddpm_a = Guard(half + _c(1), "==", _c(2) * half.floordiv(_c(2)) + _c(2))   # (size - 1) // 2 + 1 == ...
    ddpm_b = Guard(size, "==", _c(4) * half.floordiv(_c(2)) + _c(4))
    assert ddpm_a.to_python() == "size % 4 in (0, 3)"
    assert ddpm_b.to_python() == "size % 4 == 0"
    assert without_implied([ddpm_a, ddpm_b]) == [ddpm_b]   # size % 4 == 0 implies size % 4 in (0, 3)
    emb = Poly.atom(Param("emb_size"))
    translator = Guard(_c(2) * (emb + _c(1)).floordiv(_c(2)), "==", emb)
    assert translator.to_python() == "emb_size % 2 == 0"
    assert Guard(translator.lhs, "!=", translator.rhs).to_python() == "emb_size % 2 != 0"


def test_what_does_not_repeat_stays_as_written():
    assert Guard(X, ">=", _c(4)).to_python() == "x >= 4"                       # a slope: not periodic
    assert Guard(X.floordiv(_c(2)), "==", _c(3)).to_python() == "x // 2 == 3"
    y = Poly.atom(Param("y"))
    assert Guard(X.floordiv(_c(2)), "==", y.floordiv(_c(2))).to_python() == "x // 2 == y // 2"   # two sizes
    # two sizes again: the reshape rule cancels the size both counts have (`maxlen`) before it records
    assert residue_form(Guard(_c(2) * y * (X + _c(1)).floordiv(_c(2)), "==", X * y)) is None
    assert residue_form(Guard(X * X, "==", _c(4) * X)) is None                 # not linear
    assert residue_form(Guard(_c(4096) * X.floordiv(_c(4096)), "==", X)) is None   # too long a period
    assert without_implied([Guard(_c(2) * X.floordiv(_c(2)), "<=", X)]) == []   # every value meets it


def test_the_printed_remainder_forms():
    lhs = X - _c(4) * X.floordiv(_c(4))    # x % 4, as dslc keeps it
    assert Guard(lhs, "==", _c(1)).to_python() == "x % 4 == 1"
    assert Guard(lhs, "!=", _c(0)).to_python() == "x % 4 != 0"
    assert Guard(lhs, ">=", _c(2)).to_python() == "x % 4 in (2, 3)"
    assert Guard(lhs, "<", _c(3)).to_python() == "x % 4 != 3"
    assert Guard(X - _c(6) * X.floordiv(_c(6)), "<", _c(4)).to_python() == "x % 6 not in (4, 5)"
    assert Guard(X - _c(6) * X.floordiv(_c(6)), "<", _c(3)).to_python() == "x % 6 in (0, 1, 2)"


# ---------------------------------------------------------------- random guards on one size


@st.composite
def quasi_linear(draw, depth: int = 2):
    """(Python source, Poly) of a random expression in x with +, -, * by constants, // by constants."""
    kind = draw(st.sampled_from(["x", "const", "sum", "scaled", "div"] if depth else ["x", "const"]))
    if kind == "x":
        return "x", X
    if kind == "const":
        n = draw(st.integers(-5, 5))
        return f"({n})", _c(n)
    if kind == "sum":
        (a, pa), (b, pb) = draw(quasi_linear(depth - 1)), draw(quasi_linear(depth - 1))
        sign = draw(st.sampled_from("+-"))
        return f"({a} {sign} {b})", pa + pb if sign == "+" else pa - pb
    if kind == "scaled":
        k = draw(st.integers(-4, 4))
        a, pa = draw(quasi_linear(depth - 1))
        return f"({k} * {a})", _c(k) * pa
    d = draw(st.integers(1, 6))
    a, pa = draw(quasi_linear(depth - 1))
    return f"({a} // {d})", pa.floordiv(_c(d))


@st.composite
def periodic_guards(draw):
    """(source, Guard, whether it repeats): L * e against its own slope times x plus a constant, so
    both sides have the same slope and the guard repeats (the constant one of the values L * e - slope
    * x takes, or next to one, so that some values meet it and some do not); or, now and then, e
    against any expression (most do not repeat)."""
    (s1, e1), (s2, e2) = draw(quasi_linear(2)), draw(quasi_linear(2))
    d = draw(st.integers(2, 6))
    src, e = f"(({s1}) // {d} + {s2})", e1.floordiv(_c(d)) + e2
    op = draw(st.sampled_from(OPS))
    if draw(st.integers(0, 3)) == 0:
        rsrc, r = draw(quasi_linear(2))
        return f"{src} {op} {rsrc}", Guard(e, op, r), False
    period = 60 ** 3   # a multiple of every product of three divisors from 1 to 6 (the deepest nesting)
    at = lambda x: eval(src, {"x": x})  # noqa: E731
    slope = at(period) - at(0)     # L * e(x + L) - L * e(x), with L = period: the slope of L * e, times L
    x0, delta = draw(st.integers(0, 11)), draw(st.integers(-1, 1))
    b = period * at(x0) - slope * x0 + delta
    lhs = _c(period) * e
    rhs = _c(slope) * X + _c(b)
    return f"{period} * {src} {op} {slope} * x + ({b})", Guard(lhs, op, rhs), True


@settings(max_examples=150, deadline=None)
@given(periodic_guards())
def test_the_printed_guard_holds_where_the_original_does(case):
    source, g, repeats = case
    if repeats and (g.lhs - g.rhs).atoms():   # equal slopes: it must be found to repeat
        assert residue_form(g) is not None
    _agree(g, source)
    neg = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}[g.op]
    _agree(Guard(g.lhs, neg, g.rhs), f"not ({source})")


@settings(max_examples=100, deadline=None)
@given(periodic_guards(), periodic_guards())
def test_a_dropped_guard_is_implied_by_one_kept(a, b):
    (sa, ga, _), (sb, gb, _) = a, b
    kept = without_implied([ga, gb])
    ca, cb = compile(sa, "a", "eval"), compile(sb, "b", "eval")
    for x in range(-150, 251):
        holds = {id(ga): eval(ca, {"x": x}), id(gb): eval(cb, {"x": x})}
        if all(holds[id(g)] for g in kept):
            assert holds[id(ga)] and holds[id(gb)], (kept, x)


def test_the_zoo_forms_come_out_of_the_specs():
    # the residue forms hand-checked: size = 4k gives 2k == 2k and 4k == 4k, size = 4k + 2 gives
    # 2k + 1 != 2k + 2; an odd emb_size leaves a half-empty pair of sines and cosines
    ddpm = dslc.load(os.path.join(SPECS, "ddpm.dl")).source(["DDPMUNet"])
    assert 'if size % 4 != 0:\n            raise ValueError("DDPMUNet needs size % 4 == 0 (ddpm.dl:98)")' in ddpm
    assert "4 * ((size - 1)" not in ddpm and "compiled for size" not in ddpm
    assert "DDPMUNet was compiled for blocks == 1" in ddpm   # a structure chosen from a value stays one
    translator = dslc.load(os.path.join(SPECS, "translator.dl")).source(["Translator"])
    assert 'raise ValueError("Translator needs emb_size % 2 == 0 (translator.dl:28)")' in translator
    assert "Needs emb_size % 2 == 0." in translator    # the block's docstring
    assert "maxlen * (" not in translator


# ---------------------------------------------------------------- the generated classes


TRANSLATOR_SMALL = {"nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 32,
                    "maxlen": 16}


@pytest.fixture(scope="module")
def translator():
    prog = dslc.load(os.path.join(SPECS, "translator.dl"))
    return prog, prog.module(["Translator"]).Translator   # compiled at the defaults (emb_size 512)


@pytest.fixture(scope="module")
def ddpm():
    prog = dslc.load(os.path.join(SPECS, "ddpm.dl"))
    return prog, prog.module(["DDPMUNet"]).DDPMUNet        # compiled at the defaults (size 32)


def test_an_odd_emb_size_is_refused_by_the_class_and_by_dslc(translator):
    prog, cls = translator
    with pytest.raises(ValueError, match=r"^Translator needs emb_size % 2 == 0 \(translator\.dl:28\)$"):
        cls(emb_size=63, **TRANSLATOR_SMALL)
    with pytest.raises(DslcError, match="E0407"):   # the requirement is real: the spec does not check there
        prog.build("Translator", emb_size=63, **TRANSLATOR_SMALL)


def test_a_size_off_the_multiples_of_4_is_refused_by_the_class_and_by_dslc(ddpm):
    prog, cls = ddpm
    for size in (30, 31, 33):
        with pytest.raises(ValueError, match=r"^DDPMUNet needs size % 4 == 0 \(ddpm\.dl:98\)$"):
            cls(size=size)
        with pytest.raises(DslcError, match="E0403"):
            prog.build("DDPMUNet", size=size)


def _same_model(mine, theirs, inputs) -> None:
    """Equal state (names, shapes, values for one seed) and a bit-equal forward in eval mode."""
    want, got = theirs.state_dict(), mine.state_dict()
    assert [(k, v.shape) for k, v in got.items()] == [(k, v.shape) for k, v in want.items()]
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    with torch.no_grad():
        assert torch.equal(mine.eval()(*inputs), theirs.eval()(*inputs))


def test_the_translator_class_builds_another_even_emb_size(translator):
    prog, cls = translator
    torch.manual_seed(0)
    mine = cls(emb_size=64, **TRANSLATOR_SMALL)
    theirs = prog.build("Translator", seed=0, emb_size=64, **TRANSLATOR_SMALL)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(1, 16, (2, 5), generator=g), torch.randint(1, 16, (2, 7), generator=g)
    _same_model(mine, theirs, (src, tgt))


@pytest.mark.parametrize("size", [8, 16])
def test_the_ddpm_class_builds_another_multiple_of_4(ddpm, size):
    prog, cls = ddpm
    torch.manual_seed(0)
    mine = cls(size=size)
    theirs = prog.build("DDPMUNet", seed=0, size=size)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, size, size, generator=g), torch.randint(0, 1000, (2,), generator=g)
    _same_model(mine, theirs, (x, t))


# ---------------------------------------------------------------- which checks are requirements


_CHECKS = '''model Added(n: int = 8) {
    input x: [B, 8]
    output (x -> Linear(n)) + x
}
model Joined(n: int = 8) {
    input x: [B, 8]
    output concat([x -> Linear(n), x], dim=0)
}
model Multiplied(n: int = 8) {
    input x: [B, 8]
    output (x -> Linear(n)) @ transpose(x, 0, 1)
}
'''


@pytest.mark.parametrize("model, line", [("Added", 3), ("Joined", 7), ("Multiplied", 11)])
def test_a_shape_check_on_a_parameter_is_a_requirement(tmp_path, model, line):
    path = tmp_path / "checks.dl"
    path.write_text(_CHECKS, encoding="utf-8")
    prog = dslc.load(str(path))
    cls = getattr(prog.module([model]), model)
    with pytest.raises(ValueError, match=rf"^{model} needs n == 8 \(checks\.dl:{line}\)$"):
        cls(n=9)
    with pytest.raises(DslcError):   # and dslc refuses n = 9 too
        prog.build(model, n=9)
    cls(n=8)

