"""The ops users reach for, as the language spells them (issue #13): compile-time math on numbers,
casts, tensor logic, einsum, interpolate and creation ops, through `dslc.load` against torch and
onnxruntime. The registry's conformance tests cover each entry alone; these cover the spellings,
the dispatch between a number and a tensor, and the diagnostics."""
from __future__ import annotations

import math

import pytest
import torch
from support import error_codes

import dslc
from dslc.diagnostics import DslcError


def _load(tmp_path, text: str, name: str = "m.dl"):
    path = tmp_path / name
    path.write_text(text)
    return dslc.load(str(path))


def _error(tmp_path, body: str) -> str:
    path = tmp_path / "bad.dl"
    path.write_text(f"model Bad {{\n    {body}\n}}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(path))
    return str(err.value)


# ---------------------------------------------------------------- compile-time math on numbers

def test_math_on_numbers_folds_at_compile_time_and_on_tensors_is_the_tensor_function(tmp_path):
    prog = _load(tmp_path, """
model M(d_model: int = 8, depths: list = [2, 2, 6, 2]) {
    input x: [B, 8]
    scale = exp(-log(10000.0) / d_model) * sqrt(16) + sin(pi / 2) + cos(0.0) + e
    output x * scale + sum(depths) + abs(-3) + max(depths) + min(2, 3), log(abs(x) + 1) + sum(x, dim=1, keepdim=true)
}
""")
    src = prog.source()
    scale = math.exp(-math.log(10000.0) / 8) * 4 + 1 + 1 + math.e
    # what depends on no parameter is a number; what depends on d_model stays its expression
    assert "math.exp(-9.210340371976184 / self.d_model) * 4.0 + 1.0 + 1.0 + 2.718281828459045" in src
    other = prog.module().M(d_model=16)
    x = torch.randn(3, 8)
    want = x * (math.exp(-math.log(10000.0) / 16) * 4 + 1 + 1 + math.e) + 12 + 3 + 6 + 2
    torch.testing.assert_close(other(x)[0], want, rtol=0, atol=0)
    net = prog.build("M", seed=0).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        a, b = net(x)
    torch.testing.assert_close(a, x * scale + 12 + 3 + 6 + 2)
    torch.testing.assert_close(b, torch.log(x.abs() + 1) + x.sum(dim=1, keepdim=True))


def test_sum_all_any_len_of_lists(tmp_path):
    prog = _load(tmp_path, """
model M(depths: list = [2, 2, 6, 2]) {
    input x: [B, 4]
    n = sum(depths) + len(depths) + sum([])
    k = 1 if all(depths) and any([0, 0, 1]) and not any([]) and all([]) else 0
    output x * n + k
}
""")
    net = prog.build("M", seed=0).eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(net(x), x * 16 + 1)


def test_a_parameter_in_compile_time_math_stays_an_expression(tmp_path):
    """`sqrt(d)` is `math.sqrt(self.d)` in the generated forward, so the class serves every d."""
    prog = _load(tmp_path, "model M(d: int = 16) {\n    input x: [B, 4]\n    output x / sqrt(d)\n}\n")
    src = prog.source()
    assert "x / math.sqrt(self.d)" in src and "if d != 16:" not in src and "import math" in src
    x = torch.randn(2, 4)
    torch.testing.assert_close(prog.module().M(d=9)(x), x / 3.0, rtol=0, atol=0)
    torch.testing.assert_close(prog.build("M", d=9)(x), x / 3.0, rtol=0, atol=0)


def test_compile_time_math_errors(tmp_path):
    assert "E0308" in _error(tmp_path, "input x: [B, 4]\n    output x * log(-1.0)")
    assert "E0308" in _error(tmp_path, "input x: [B, 4]\n    output x * exp(1000.0)")
    msg = _error(tmp_path, "input x: [B, T]\n    output x * log(x.shape[1])")
    assert "E0301" in msg and "run-time size `T`" in msg
    assert "E0301" in _error(tmp_path, 'input x: [B, 4]\n    output x * sqrt("a")')
    assert "E0301" in _error(tmp_path, "input x: [B, 4]\n    output x * all(3)")
    assert error_codes(tmp_path, "input x: [B, T]\n    output x * sum([x.shape[1], 2])") == ["E0301"]


def test_pi_and_e_may_be_shadowed_by_a_local_name(tmp_path):
    prog = _load(tmp_path, "model M(e: float = 2.0) {\n    input x: [B, 4]\n    pi = 3\n    output x * e + pi\n}\n")
    net = prog.build("M", seed=0).eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(net(x), x * 2.0 + 3)


# ---------------------------------------------------------------- casts

CASTS = """
model C {
    input x: [B, 4]
    input t: [B, 4] of int64
    output float(x > 0) + 1, long(x), int(x), bool(t), double(t), half(x), x -> long, cast(t, "uint8"), x * float(2) + int(2.7)
}
"""


def _onnx_matches(prog, name: str, inputs: dict, net_outputs) -> None:
    import numpy as np
    from support import ort_run
    got = ort_run(prog.onnx(name), {k: v.numpy() for k, v in inputs.items()})
    want = net_outputs if isinstance(net_outputs, tuple) else (net_outputs,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = w.numpy()
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_casts_are_torchs_methods_on_tensors_and_conversions_on_numbers(tmp_path):
    prog = _load(tmp_path, CASTS)
    body = prog.source().split("def forward")[1]
    for method in (".float()", ".long()", ".int()", ".bool()", ".double()", ".half()", ".byte()"):
        assert method in body, method
    net = prog.build("C", seed=0).eval()
    x, t = torch.randn(3, 4) * 4, torch.randint(-3, 300, (3, 4))
    with torch.no_grad():
        outs = net(x, t)
    want = ((x > 0).float() + 1, x.long(), x.int(), t.bool(), t.double(), x.half(), x.long(), t.byte(), x * 2.0 + 2)
    for got, w in zip(outs, want):
        assert got.dtype == w.dtype
        torch.testing.assert_close(got, w)
    _onnx_matches(prog, "C", {"x": x, "t": t}, outs)


def test_a_tensor_only_cast_on_a_number_says_what_to_write(tmp_path):
    msg = _error(tmp_path, "input x: [B, 4]\n    output x * long(3)")
    assert "E0301" in msg and "a number is made an int by `int`" in msg
    assert "E0301" in _error(tmp_path, "input x: [B, 4]\n    output x * bool(1)")
    assert "E0302" in _error(tmp_path, 'input x: [B, 4]\n    output cast(x, "int128")')


# ---------------------------------------------------------------- tensor logic

LOGIC = """
model L {
    input a: [B, 4] of bool
    input b: [4] of bool
    input i: [B, 4] of int64
    input x: [B, 4]
    output a & b, a | b, a ^ b, ~a, not a, ~i, i & 6, i | 1 ^ 3 & i, not x, (x > 0) & a | ~b, not x > 0
}
"""


def test_logic_operators_are_torchs_with_pythons_precedence_and_match_in_onnx(tmp_path):
    prog = _load(tmp_path, LOGIC)
    net = prog.build("L", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 4, generator=g) > 0.5, torch.rand(4, generator=g) > 0.5
    i = torch.randint(-9, 9, (3, 4), generator=g)
    x = torch.randn(3, 4, generator=g).round()   # some zeros for `not x`
    with torch.no_grad():
        outs = net(a, b, i, x)
    want = (a & b, a | b, a ^ b, ~a, ~a, ~i, i & 6, i | (1 ^ (3 & i)), x == 0, (x > 0) & a | ~b, ~(x > 0))
    assert len(outs) == len(want)
    for got, w in zip(outs, want):
        assert got.dtype == w.dtype and torch.equal(got, w)
    _onnx_matches(prog, "L", {"a": a, "b": b, "i": i, "x": x}, outs)


def test_logic_on_compile_time_values_is_pythons(tmp_path):
    prog = _load(tmp_path, "model M(n: int = 6) {\n    input x: [B, 4]\n    k = (n & 3) + (n | 1) + (n ^ 5) + ~n\n"
                           "    output x * k if true & (false | true) else x\n}\n")
    net = prog.build("M", seed=0).eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(net(x), x * ((6 & 3) + (6 | 1) + (6 ^ 5) + ~6))
    assert "E0307" in _error(tmp_path, "input x: [B, 4]\n    output x * (1 & true)")
    assert "E0307" in _error(tmp_path, "input x: [B, 4]\n    output x * ~2.5")


def test_logic_on_a_float_tensor_is_a_clean_error_at_the_operand(tmp_path):
    msg = _error(tmp_path, "input x: [B, 4]\n    m = x > 0\n    output m & x")
    assert "E0310" in msg and "`&` takes bool or integer tensors" in msg and "bad.dl:4:16" in msg   # at `x`
    assert "E0310" in _error(tmp_path, "input x: [B, 4]\n    output ~x")
    assert "E0310" in _error(tmp_path, "input i: [B, 4] of int64\n    output i | 1.5")
    msg = _error(tmp_path, "input x: [B, 4]\n    output (x > 0) and (x < 1)")
    assert "E0307" in msg and "`&`, `|` and `~`" in msg


# ---------------------------------------------------------------- einsum

EINSUM = """
model E {
    input q: [B, 2, T, 4]
    input k: [B, 2, T, 4]
    input w: [4, 3]
    scores = einsum("bhqd,bhkd->bhqk", q, k)
    output scores, einsum("...d,de->...e", q, w), einsum("bhtd", [q]), einsum("b h t d , d e -> b e", q, w)
}
"""


def test_einsum_is_torchs_with_run_time_sizes_and_matches_in_onnx(tmp_path):
    prog = _load(tmp_path, EINSUM)
    graph = prog.graph("E")
    shapes = [str(graph.type_of(ref)) for _, ref in graph.outputs]
    assert shapes[0].startswith("[B, 2, T, T]") and shapes[1].startswith("[B, 2, T, 3]"), shapes
    assert 'torch.einsum("bhqd,bhkd->bhqk", q, k)' in prog.source()
    net = prog.build("E", seed=0).eval()
    q, k, w = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), torch.randn(4, 3)
    with torch.no_grad():
        outs = net(q, k, w)
    want = (torch.einsum("bhqd,bhkd->bhqk", q, k), torch.einsum("...d,de->...e", q, w), q.permute(0, 3, 1, 2),
            torch.einsum("bhtd,de->be", q, w))
    for got, w_ in zip(outs, want):
        torch.testing.assert_close(got, w_)
    _onnx_matches_close(prog, "E", {"q": q, "k": k, "w": w}, outs)


def _onnx_matches_close(prog, name: str, inputs: dict, outs) -> None:
    import numpy as np
    from support import ort_run
    got = ort_run(prog.onnx(name), {k: v.numpy() for k, v in inputs.items()})
    for g, w in zip(got, outs):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,code,text", [
    ('einsum("ij,jk->ik", a)', "E0302", "names 2 operands but 1 tensor is given"),
    ('einsum("ij,jk->ik->i", a, b)', "E0302", "`->` may appear once"),
    ('einsum("i1,jk->ik", a, b)', "E0302", "`1` in operand 1 is not a subscript"),
    ('einsum("ii,jk->ik", a, b)', "E0302", "`i` appears twice in operand 1 (a diagonal or a trace)"),
    ('einsum("ij,jk->iz", a, b)', "E0302", "the output's `z` is in no operand"),
    ('einsum("ij,jk->ii", a, b)', "E0302", "`i` appears twice in the output"),
    ('einsum("ij,jk->...", a, b)', "E0302", "the output has `...` but no operand does"),
    ('einsum("...i...,jk->ik", a, b)', "E0302", "operand 1 has `...` twice"),
    ('einsum("ijk,jk->ik", a, b)', "E0402", "operand 1 is [3, 4], but its subscripts `ijk` name 3 dimensions"),
    ('einsum("ij,ik->jk", a, b)', "E0403", "`i` is 3 in operand 1 but 4 in operand 2"),
    ('einsum("ij,jk->ik", a, c)', "E0310", "one dtype"),
    ('einsum(3, a)', "E0301", "expects a string"),
])
def test_einsum_diagnostics(tmp_path, call, code, text):
    msg = _error(tmp_path, f"input a: [3, 4]\n    input b: [4, 5]\n    input c: [4, 5] of float64\n"
                           f"    output {call}")
    assert code in msg and text in msg, msg
    if code == "E0302":   # at the equation
        assert f"bad.dl:5:{len('    output einsum(') + 1}" in msg, msg


# ---------------------------------------------------------------- interpolate and the 2-d upsampling layers

RESIZE = """
model R {
    input x: [B, 3, 6, 5]
    a = interpolate(x, scale_factor=2.0, mode="bilinear")
    b = x -> interpolate(size=[4, 9], mode="bicubic", align_corners=true)
    c = x -> UpsamplingBilinear2d(scale_factor=1.5)
    d = x -> UpsamplingNearest2d(size=[7, 3]) as up
    output a, b, c, d, interpolate(x, scale_factor=0.5)
}
"""


def test_interpolate_and_the_upsampling_layers_are_torchs_and_match_in_onnx(tmp_path):
    import torch.nn.functional as F
    prog = _load(tmp_path, RESIZE)
    src = prog.source()
    assert "nn.UpsamplingNearest2d(size=(7, 3))" in src and "F.interpolate(x, scale_factor=1.5, mode='bilinear', " \
        "align_corners=True)" in src.replace('"', "'"), src
    net = prog.build("R", seed=0).eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        outs = net(x)
    want = (F.interpolate(x, scale_factor=2.0, mode="bilinear"),
            F.interpolate(x, size=[4, 9], mode="bicubic", align_corners=True),
            torch.nn.UpsamplingBilinear2d(scale_factor=1.5)(x), torch.nn.UpsamplingNearest2d(size=(7, 3))(x),
            F.interpolate(x, scale_factor=0.5))
    for got, w in zip(outs, want):
        torch.testing.assert_close(got, w)
    _onnx_matches_close(prog, "R", {"x": x}, outs)


def test_interpolate_and_the_layers_report_in_their_own_names(tmp_path):
    msg = _error(tmp_path, "input x: [B, 3, 6, 5]\n    output interpolate(x, size=4, scale_factor=2.0)")
    assert "E0302" in msg and "`interpolate` takes exactly one of size and scale_factor" in msg
    msg = _error(tmp_path, "input x: [B, 3, 6]\n    output x -> UpsamplingBilinear2d(scale_factor=2.0)")
    assert "E0402" in msg and "`UpsamplingBilinear2d` expects a 4-d input" in msg
    msg = _error(tmp_path, 'input x: [B, 3, 6]\n    output interpolate(x, scale_factor=2.0, mode="bilinear")')
    assert "E0402" in msg and '`interpolate` with mode="bilinear" expects a 4-d input' in msg
    assert "E0305" in _error(tmp_path, 'input x: [B, 3, 6, 6]\n    output x -> UpsamplingNearest2d(2.0, mode="bilinear")')


# ---------------------------------------------------------------- creation ops

RANGES = """
model A {
    input x: [B, T, 4]
    p = arange(x.shape[1])
    q = arange(2, x.shape[1], dtype="int64")
    r = arange(0, x.shape[1], 2)
    output p, q, r, linspace(-1.0, 2.0, 7), full([x.shape[0], 3], 7), full([2], 0.5, dtype="float64"), arange(8, 2, -3)
}
"""


def test_arange_with_run_time_ends_linspace_and_full_are_torchs(tmp_path):
    prog = _load(tmp_path, RANGES)
    graph = prog.graph("A")
    assert [str(graph.type_of(r)).split(" of ")[0] for _, r in graph.outputs] == \
        ["[T]", "[T - 2]", "[(T + 1) // 2]", "[7]", "[B, 3]", "[2]", "[2]"]
    net = prog.build("A", seed=0).eval()
    for t in (2, 5):
        x = torch.randn(3, t, 4)
        outs = net(x)
        want = (torch.arange(t, dtype=torch.float32), torch.arange(2, t), torch.arange(0, t, 2, dtype=torch.float32),
                torch.linspace(-1.0, 2.0, 7), torch.full((3, 3), 7), torch.full((2,), 0.5, dtype=torch.float64),
                torch.arange(8, 2, -3, dtype=torch.float32))
        for got, w in zip(outs, want):
            assert got.dtype == w.dtype
            torch.testing.assert_close(got, w)
        _onnx_matches_close(prog, "A", {"x": x}, outs)
    with pytest.raises(ValueError, match="A needs T >= 2"):   # torch refuses arange(2, 1)
        net(torch.randn(3, 1, 4))


def test_random_tensors_have_their_shapes_dtypes_and_ranges_in_torch_and_onnx(tmp_path):
    from support import ort_run
    prog = _load(tmp_path, """
model Z {
    input x: [B, 4]
    u = rand([x.shape[0], 3])
    i = randint(-3, 4, [x.shape[0], 6])
    output u, randn([2, 5], dtype="float64"), i, rand_like(x), randn_like(x), randint(0, 5, [4], dtype="uint8"), noise([2])
}
""")
    src = prog.source()
    for call in ("torch.rand(B, 3", "torch.randn(2, 5, dtype=torch.float64", "torch.randint(-3, 4, (B, 6)",
                 "torch.rand_like(x)", "torch.randn_like(x)", "torch.randint(0, 5, (4,), dtype=torch.uint8"):
        assert call in src, call
    net = prog.build("Z", seed=0).eval()
    x = torch.randn(64, 4)
    torch_outs = [t.numpy() for t in net(x)]
    onnx_outs = ort_run(prog.onnx("Z"), {"x": x.numpy()})
    for outs in (torch_outs, onnx_outs):
        u, n, i, ul, nl, small, z = outs
        assert [a.shape for a in outs] == [(64, 3), (2, 5), (64, 6), (64, 4), (64, 4), (4,), (2,)]
        assert [str(a.dtype) for a in outs] == ["float32", "float64", "int64", "float32", "float32", "uint8", "float32"]
        assert 0 <= u.min() and u.max() < 1 and 0 <= ul.min() and ul.max() < 1
        assert i.min() >= -3 and i.max() <= 3 and len(set(i.ravel().tolist())) > 3 and small.max() <= 4
        assert abs(nl.mean()) < 0.5 and 0.5 < nl.std() < 1.5
    assert not (net(x)[0].numpy() == torch_outs[0]).all()   # fresh values at each call


def test_creation_op_errors(tmp_path):
    assert "E0302" in _error(tmp_path, "input x: [B, 4]\n    output x + randint(3, 3, [4])")
    assert "E0302" in _error(tmp_path, "input x: [B, 4]\n    output x + arange(5, 2)")
    assert "E0302" in _error(tmp_path, "input x: [B, 4]\n    output x + arange(0, 4, 0)")
    assert "E0310" in _error(tmp_path, "input x: [B, 4] of int64\n    output rand_like(x)")


# ---------------------------------------------------------------- torch's method form on tensors

def test_tensor_methods_are_the_functions_with_the_tensor_first(tmp_path):
    """`h.permute(0, 2, 3, 1)`, `x.view(B, -1)`, `x.float()` as PyTorch users write them (ConvNeXt's
    block): the same functions as `permute(h, [0, 2, 3, 1])`, dims given one by one or as a list."""
    prog = _load(tmp_path, """
model M {
    input x: [B, 3, 4, 5]
    input ids: [B, 5] of int64
    a = x.permute(0, 2, 3, 1).contiguous()
    b = x.view(x.size(0), -1) * (x.size(-1) - x.size()[3] + 1)
    c = x.permute([0, 3, 1, 2]).transpose(1, 2).mean(dim=1)
    d = ids.float().sum(dim=1, keepdim=true)
    output a, b, c, d, x.flatten(1).softmax(dim=-1)
}
""")
    net = prog.build("M", seed=0).eval()
    x, ids = torch.randn(2, 3, 4, 5), torch.randint(0, 9, (2, 5))
    want = (x.permute(0, 2, 3, 1), x.view(2, -1), x.permute(0, 3, 1, 2).transpose(1, 2).mean(dim=1),
            ids.float().sum(dim=1, keepdim=True), x.flatten(1).softmax(dim=-1))
    with torch.no_grad():
        got = net(x, ids)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert "x.permute(0, 2, 3, 1)" in prog.source()


def test_a_method_form_call_is_checked_like_the_function(tmp_path):
    text = _error(tmp_path, "input x: [B, 3, 4]\n    output x.permute(0, 1)")
    assert "E0406" in text and "`permute` needs each of the 3 dimensions once" in text
    text = _error(tmp_path, "input x: [B, 3, 4]\n    output x.view(x.size(3), -1)")
    assert "E0308" in text and "dimension 3 is out of range for a tensor of rank 3" in text
    text = _error(tmp_path, "input x: [B, 3, 4]\n    output x.permut(0, 2, 1)")
    assert "E0208" in text and "a tensor has no attribute `permut`" in text and "did you mean `permute`?" in text


def test_a_bare_number_as_a_param_initializer_suggests_constant(tmp_path):
    text = _error(tmp_path, "input x: [B, 4]\n    param g: [4] = 0.5\n    output x * g")
    assert "E0301" in text and "a fill value is written `constant(0.5)`" in text
