"""ONNX export of the tensor functions (dslc/ops/tensor.py) where sizes are known only at run time.

The one-op conformance test (test_onnx_ops) sees static shapes only. Here whole `.dl` models with
inputs [B, T, ...] are exported once and run in onnxruntime at two values of B and T against the
PyTorch build, so no Reshape, Expand, Slice or ConstantOfShape may hold a baked size. Also:
- the exported outputs' declared dims (`2 * T`, `(T + 2) // 3`) equal the actual ones;
- indexing and slicing on a run-time size matches Python's slicing at every length, short
  lengths (where the bounds clamp) included;
- dtypes: torch's promotion in arithmetic, concat and sums, at run-time sizes too.
"""
from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest
import torch
from support import ort_run, single_op_graph

import dslc
from dslc.backends.onnx_emit import emit_model
from dslc.ir.dims import Sym
from dslc.ops import REGISTRY
from dslc.ops.registry import Example, S, ShapeError

SIZES = ({"B": 2, "T": 5}, {"B": 3, "T": 8})

SOURCE = '''
model Reshape {
    input x: [B, T, 12]
    h = x -> reshape([B, T, 3, 4]) -> transpose(1, 2) -> flatten(start_dim=2)
    output h[:, 1:, ::2]
}

model Views {
    input x: [B, T, 12]
    a = x -> reshape([-1, 4]) -> reshape([B, -1]) -> unflatten(1, [-1, 2, 2])
    b = x -> unflatten(2, [2, 6]) -> permute([0, 3, 1, 2]) -> flatten(1, 2)
    c = x -> unsqueeze(1) -> squeeze() -> Flatten()
    d = x -> Unflatten(2, [3, 4]) -> flatten(0, 1) -> reshape([B, -1, 2])
    e = x -> unsqueeze(-1) -> transpose(0, -1) -> squeeze(0)
    output a, b, c, d, e
}

model Positions {
    input tokens: [B, T] of int64
    p = positions(tokens)
    output p, tokens + p, (p -> Embedding(16, 8)) + (tokens -> Embedding(16, 8))
}

model ClassToken {
    input x: [B, T, 8]
    param cls: [1, 1, 8] = normal(std=0.02)
    h = concat([expand(cls, [B, 1, 8]), x], dim=1)
    g = concat([x, expand(cls, [B, -1, -1])], dim=-2)
    output h, h[:, 0], g[:, -1], stack([x, x * 2], dim=-1), stack([h[:, 0], g[:, 0]])
}

model Chunks {
    input x: [B, T, 12]
    q, k, v = x -> Linear(12) -> chunk(3, dim=-1)
    a, b = split(x, [5, 7], dim=2)
    s = (q @ transpose(k, 1, 2)) / 2
    output s @ v, a * b[:, :, 1:6], chunk(x, 5, dim=2)[3], split(x, 5, dim=-1)[2]
}

model Reductions {
    input x: [B, T, 6]
    a = mean(x, dim=1)
    b = sum(x, dim=[0, 2], keepdim=true)
    c = amin(x, dim=[-1, 1], keepdim=true)
    output a, b, c, amax(x, dim=-1), amin(x), mean(x, keepdim=true), sum(x), sum(x, dim=[])
}

model IntReductions {
    input i: [B, T, 3] of int32
    output sum(i, dim=1), amax(i), sum(i)
}

model Indexing {
    input x: [B, T, 5]
    output x[-1], x[:, -2], x[:, -3:-1], x[:, :-1, 1::2], x[:, 2:], x[0, 1, -1], x[:, ::3, :2], x[1:, :, -1]
}

model Arithmetic {
    input x: [B, T, 4]
    input i: [B, T, 4] of int64
    output i / 2, i * 1.5, i ** 3, 2 ** x, 0.5 / x, -x, x - i, i / i, x ** 2, 3 - i, x @ transpose(x, 1, 2)
}

model Creation {
    input x: [B, T, 4]
    z = zeros([B, T]) + ones([B, 1])
    flags = zeros([T], dtype="bool")
    output z, ones([B, 2], dtype="int64"), noise([B, 3]), noise([2, 5]), detach(x), reparameterize(x, x), flags
}

block SequenceMean {
    input x
    output sum(x, dim=1) / x.shape[1]
}

model SizeArithmetic {
    input x: [B, T, 4]
    input tokens: [B, T] of int64
    output x -> SequenceMean(), sum(x, dim=1) / (T - 1), x * B - T, 2 / (T + x), tokens * T, tokens / B
}
'''
MODELS = ("Reshape", "Views", "Positions", "ClassToken", "Chunks", "Reductions", "IntReductions", "Indexing",
          "Arithmetic", "Creation", "SizeArithmetic")
RANDOM = {"Creation": {2, 3}}  # the noise outputs: compared by shape and dtype only


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_tensor") / "tensor.dl"
    path.write_text(SOURCE)
    return dslc.load(str(path))


def _feeds(model, sizes: dict, seed: int) -> dict:
    """Random inputs for the model's graph inputs, run-time dims set from `sizes`."""
    gen = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        t = inp.type.tensor_type
        shape = [sizes[d.dim_param] if d.dim_param else d.dim_value for d in t.shape.dim]
        if t.elem_type == 1:  # float
            feeds[inp.name] = gen.standard_normal(shape).astype(np.float32)
        else:
            dtype = {6: np.int32, 7: np.int64}[t.elem_type]
            feeds[inp.name] = gen.integers(0, 16, shape).astype(dtype)
    return feeds


def _declared(output, sizes: dict) -> tuple:
    """An output's declared shape with the run-time sizes put in (`2 * T` -> 10)."""
    dims = output.type.tensor_type.shape.dim
    return tuple(eval(d.dim_param, {}, dict(sizes)) if d.dim_param else d.dim_value for d in dims)


@pytest.mark.parametrize("name", MODELS)
def test_one_export_matches_torch_at_several_sizes(program, name):
    model = program.onnx(name)
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:2] == ["B", "T"]
    net = program.build(name, seed=0).eval()
    for k, sizes in enumerate(SIZES):
        feeds = _feeds(model, sizes, k)
        with torch.no_grad():
            out = net(*(torch.from_numpy(feeds[i.name]) for i in model.graph.input))
        want = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
        got = ort_run(model, feeds)
        assert len(got) == len(want)
        for j, (g, w, decl) in enumerate(zip(got, want, model.graph.output)):
            assert g.shape == w.shape == _declared(decl, sizes), (name, j, g.shape, w.shape)
            assert g.dtype == w.dtype, (name, j, g.dtype, w.dtype)
            if j not in RANDOM.get(name, ()):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{name} output {j} at {sizes}")


def test_arithmetic_with_run_time_sizes_means_what_torch_computes(program):
    """`sum(x, dim=1) / x.shape[1]` is torch's mean over dim 1; `tokens * T` keeps int64, `tokens / B` is float."""
    net = program.build("SizeArithmetic", seed=0)
    for b, t in ((2, 5), (3, 8)):
        x, tokens = torch.randn(b, t, 4), torch.randint(0, 9, (b, t))
        mean, unbiased, shifted, inverse, scaled, divided = net(x, tokens)
        torch.testing.assert_close(mean, x.mean(dim=1))
        torch.testing.assert_close(unbiased, x.sum(dim=1) / (t - 1))
        torch.testing.assert_close(shifted, x * b - t)
        torch.testing.assert_close(inverse, 2 / (t + x))
        assert scaled.dtype == torch.int64 and torch.equal(scaled, tokens * t)
        assert divided.dtype == torch.float32 and torch.equal(divided, tokens / b)
    for level in (1, 2):  # the passes leave a run-time operand alone
        torch.testing.assert_close(program.build("SizeArithmetic", seed=0, opt=level)(x, tokens)[0], x.mean(dim=1))


def test_run_time_sizes_are_read_not_baked(program):
    """No exported Reshape/Expand/ConstantOfShape shape is a constant that holds a run-time size."""
    for name in ("Reshape", "ClassToken", "Creation"):
        model = program.onnx(name)
        consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
        shaped = [n for n in model.graph.node if n.op_type in ("Reshape", "Expand", "ConstantOfShape")]
        assert shaped and all(n.input[-1] not in consts for n in shaped), name


# ---------------------------------------------------------------- indexing on a run-time size

T = Sym.var("T")
BOUNDS = (None, -9, -4, -1, 0, 1, 3, 9)


def _index_graph(index):
    """The one-op graph of x[:, index] on a [2, T, 3] input (None where the shape rule has no static
    length for it: a negative start with a positive stop)."""
    example = Example({"input": S(2, T, 3), "index": (("slice", None, None, None), index)})
    try:
        return single_op_graph(REGISTRY["index"], example)[0]
    except ShapeError:
        return None


INDEX_CASES = [index for index in [("slice", *b) for b in itertools.product(BOUNDS, BOUNDS, (None, 2, 3))]
               + list(range(-3, 3)) if _index_graph(index) is not None]


def _run_index(index, lengths):
    """x[:, index] exported once with T symbolic, against torch at each length."""
    model = emit_model(_index_graph(index), {})
    py = slice(*index[1:]) if isinstance(index, tuple) else index
    for length in lengths:
        x = torch.randn(2, length, 3, generator=torch.Generator().manual_seed(length))
        (got,) = ort_run(model, {"input": x.numpy()})
        want = x[:, py].numpy()
        assert got.shape == want.shape, (index, length, got.shape, want.shape)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("index", INDEX_CASES, ids=str)
def test_slices_of_a_run_time_size_follow_python(index):
    if isinstance(index, int):
        _run_index(index, [n for n in (1, 2, 4, 7) if -n <= index < n])
    else:
        _run_index(index, (1, 2, 4, 7, 10))


# ---------------------------------------------------------------- dtypes

def _one_op(name: str, args: dict, tensors: list):
    graph, _ = single_op_graph(REGISTRY[name], Example(args))
    model = emit_model(graph, {})
    import onnx
    onnx.checker.check_model(model, full_check=True)
    return ort_run(model, {n: t.numpy() for (n, _), t in zip(graph.inputs, tensors)})


def _spec(t: torch.Tensor):
    return S(*t.shape, dtype=str(t.dtype).removeprefix("torch."))


INTS = {"int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
        "uint8": torch.uint8}
ALL = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, **INTS, "bool": torch.bool}


def _tensor(dtype, shape=(2, 3), seed=0):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.rand(shape, generator=gen) * 4 - 2).to(dtype)
    lo = 0 if dtype == torch.uint8 else -100
    return torch.randint(lo, 100, shape, generator=gen).to(dtype)


def _same(got, want: torch.Tensor):
    got = torch.from_numpy(np.asarray(got))
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow}


def _operand(dtype, shape, op: str, seed=0):
    """Random operands; for `**` small ones (integer overflow and 0 ** negative are tested on their own)."""
    if op != "pow":
        return _tensor(dtype, shape, seed)
    if dtype.is_floating_point:
        return _tensor(dtype, shape, seed).abs() + 0.5
    return torch.randint(0 if dtype in (torch.uint8, torch.bool) else -3, 2 if dtype == torch.bool else 6, shape,
                         generator=torch.Generator().manual_seed(seed)).to(dtype)


def _tensor_pair(op: str, a: str, b: str):
    return _operand(ALL[a], (2, 3), op), _operand(ALL[b], (3,), op, seed=1)


def _scalar_pair(op: str, a: str, scalar, scalar_first: bool):
    x = _operand(ALL[a], (4,), op)
    return (scalar, x) if scalar_first else (x, scalar)


def _torch_accepts(op: str, pair) -> bool:
    """Whether torch computes `a <op> b` at all (it rejects bool - and **, and ints to negative powers)."""
    try:
        OPS[op](*pair)
    except RuntimeError:
        return False
    return True


TENSOR_CASES = [(op, a, b) for op in sorted(OPS) for a in ALL for b in ALL
                if _torch_accepts(op, _tensor_pair(op, a, b))]
SCALAR_CASES = [(op, a, scalar, first) for op in sorted(OPS) for a in ALL for scalar in (3, 2.5, -2)
                for first in (False, True) if _torch_accepts(op, _scalar_pair(op, a, scalar, first))]


@pytest.mark.parametrize("op,a,b", TENSOR_CASES, ids=["-".join(c) for c in TENSOR_CASES])
def test_tensor_arithmetic_promotes_as_torch(op, a, b):
    x, y = _tensor_pair(op, a, b)
    (got,) = _one_op(op, {"input": _spec(x), "other": _spec(y)}, [x, y])
    _same(got, OPS[op](x, y))


@pytest.mark.parametrize("op,a,scalar,scalar_first", SCALAR_CASES,
                         ids=[f"{op}-{a}-{s}{'-first' if first else ''}" for op, a, s, first in SCALAR_CASES])
def test_scalar_arithmetic_lifts_the_category_only(op, a, scalar, scalar_first):
    pair = _scalar_pair(op, a, scalar, scalar_first)
    want = OPS[op](*pair)
    x = pair[1] if scalar_first else pair[0]
    args = {"input": scalar, "other": _spec(x)} if scalar_first else {"input": _spec(x), "other": scalar}
    (got,) = _one_op(op, args, [x])
    _same(got, want)


@pytest.mark.parametrize("a", sorted(INTS))
def test_integer_powers_wrap_around_as_torch(a):
    x = _tensor(INTS[a], (6,))
    for k in (0, 1, 2, 3, 7, 13):
        (got,) = _one_op("pow", {"input": _spec(x), "other": k}, [x])
        _same(got, x ** k)
    e = torch.tensor([-2, -1, 0, 1, 2, 3], dtype=torch.int64)
    base = torch.tensor([0, 0, 0, 2, -3, 1], dtype=INTS[a]) if a != "uint8" else torch.tensor([0, 0, 0, 2, 3, 1],
                                                                                             dtype=torch.uint8)
    (got,) = _one_op("pow", {"input": _spec(base), "other": _spec(e)}, [base, e])
    _same(got, base ** e)


@pytest.mark.parametrize("op,a", [(op, a) for op in ("sum", "amax", "amin", "mean") for a in sorted(ALL)
                                  if op != "mean" or ALL[a].is_floating_point])
def test_reductions_keep_torch_dtypes(op, a):
    x = _tensor(ALL[a], (2, 3, 4))
    fn = getattr(torch, op)
    for dim, keep in ((None, False), (1, False), ((0, -1), True), (-2, True)):
        if dim is None:
            want = fn(x) if op in ("sum", "mean") else fn(x, dim=(0, 1, 2))
        else:
            want = fn(x, dim=dim, keepdim=keep)
        (got,) = _one_op(op, {"input": _spec(x), "dim": list(dim) if isinstance(dim, tuple) else dim, "keepdim": keep},
                         [x])
        _same(got, want)


@pytest.mark.parametrize("a,b", [("float32", "int64"), ("bool", "int8"), ("uint8", "int8"), ("float16", "float64")])
def test_concat_and_stack_promote_as_torch(a, b):
    x, y = _tensor(ALL[a]), _tensor(ALL[b], seed=1)
    (got,) = _one_op("concat", {"tensors": [_spec(x), _spec(y)], "dim": -1}, [x, y])
    _same(got, torch.cat([x, y], dim=-1))
    (got,) = _one_op("stack", {"tensors": [_spec(x), _spec(y)], "dim": -1}, [x, y])
    _same(got, torch.stack([x, y], dim=-1))


@pytest.mark.parametrize("a", sorted(ALL))
def test_layout_ops_keep_every_dtype(a):
    x = _tensor(ALL[a], (3, 1, 4))
    for name, args, want in (
            ("neg", {}, None if a == "bool" else -x),
            ("expand", {"sizes": [2, -1, 5, 4]}, x.expand(2, -1, 5, 4)),
            ("squeeze", {"dim": None}, x.squeeze(1)),
            ("index", {"index": (-1, ("slice", None, None, 2))}, x[-1, ::2]),
            ("reshape", {"shape": [-1, 2]}, x.reshape(-1, 2))):
        if want is not None:
            (got,) = _one_op(name, {"input": _spec(x), **args}, [x])
            _same(got, want)
    for fill in ("zeros", "ones"):
        (got,) = _one_op(fill, {"size": [2, 3], "dtype": a}, [])
        _same(got, getattr(torch, fill)(2, 3, dtype=ALL[a]))


def test_ops_on_a_0d_tensor_agree_in_onnx(tmp_path):
    """transpose, squeeze and flatten of a 0-d tensor (a loss, a sum) run in torch; ONNX gives the same."""
    path = tmp_path / "scalar.dl"
    path.write_text("model M {\n    input x: [B, 4]\n    s = sum(x)\n    t = transpose(s, 0, -1)\n"
                    "    u = squeeze(t, 0)\n    output flatten(u + s)\n}\n")
    prog = dslc.load(str(path))
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with torch.no_grad():
        want = prog.build("M", seed=0)(torch.from_numpy(x)).numpy()
    got = ort_run(prog.onnx("M", seed=0), {"x": x})[0]
    assert want.shape == got.shape == (1,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
