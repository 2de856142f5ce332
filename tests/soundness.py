"""`dslc check` is sound: random specs composed from the registry either get a diagnostic, or build,
run a forward pass in PyTorch and agree with onnxruntime. Shared by tests/test_soundness.py (a bounded
number of examples in the suite) and tools/soundness.py (many more, by hand).

A spec chains one to three ops, each with the arguments its registry entry's `arbitrary` draws. The
first op gets the input shapes its drawn example has (half the time with a run-time batch size `B`),
so that it usually checks; later ops apply to the running tensor, so many specs do not check, which
is the other half of the property: those must end in a diagnostic, never an exception.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from support import Drawer, random_input, relative_error

import dslc
from dslc.diagnostics import DslcError
from dslc.ir.dims import unmet
from dslc.ops import REGISTRY
from dslc.ops.registry import TensorSpec

# Deterministic ops with drawn arguments (random ones cannot be compared with onnxruntime).
OPS = sorted((op for op in REGISTRY.values() if op.arbitrary is not None and not op.internal and op.pure
              and op.kind in ("function", "layer")), key=lambda op: op.name)
ORDERING = {"argmax", "argmin", "topk", "sort"}   # ops that pick indices by comparing values
# torch's checks of data values, which no checker can decide before the values exist (a chained op may
# turn values into ids out of range): the same model written by hand raises them on the same inputs.
VALUE_CHECKS = re.compile(r"should be between 0 and 1|index out of range in self|Target -?\d+ is out of bounds|"
                          r"Class values must be|index -?\d+ is out of bounds|out of bounds for dimension")


@dataclass
class Spec:
    text: str
    inputs: dict = field(default_factory=dict)   # name -> (TensorSpec, its dim 0 is the run-time `B`)
    ops: list = field(default_factory=list)


def literal(v) -> str:
    """A drawn argument as `.dl` source (a non-finite float as a huge one: the language has no inf)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("1e30" if v > 0 else "-1e30")
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    return str(v)


class RandomDrawer(Drawer):
    """Drawer's interface over `random.Random` (tools/soundness.py: many cases, no shrinking)."""

    def __init__(self, rng):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bool(self) -> bool:
        return self.rng.random() < 0.5

    def choice(self, seq):
        return self.rng.choice(list(seq))

    def permutation(self, n: int) -> list:
        out = list(range(n))
        self.rng.shuffle(out)
        return out


def draw_spec(data) -> Spec:
    """A random spec; `data` is hypothesis's `st.data()` or a RandomDrawer."""
    d = data if isinstance(data, Drawer) else Drawer(data)
    spec = Spec("")
    lines, current = [], None
    for i in range(d.int(1, 3)):
        op = d.choice(OPS)
        example = op.arbitrary(d)
        spec.ops.append(op.name)
        lines.append(f"    h{i} = {_call(op, example, spec, current, d)}")
        current = f"h{i}"
    decls = [f"    input {name}: [{_dims(s, batch)}] of {s.dtype}" for name, (s, batch) in spec.inputs.items()]
    spec.text = "model M {\n" + "\n".join(decls + lines) + f"\n    output {current}\n}}\n"
    return spec


def _dims(s: TensorSpec, batch: bool) -> str:
    return ", ".join(["B" if batch and k == 0 else str(n) for k, n in enumerate(s.shape)])


def _new_input(spec: Spec, s: TensorSpec, d) -> str:
    name = f"x{len(spec.inputs)}"
    spec.inputs[name] = (s, bool(s.shape) and d.bool())
    return name


def _call(op, example, spec: Spec, current, d) -> str:
    """The op applied to the running tensor (or, first, to new inputs shaped as its example's)."""
    def tensor(s) -> str:
        nonlocal current
        if isinstance(s, tuple):   # a tuple input (an LSTM's state): a new input for each element
            return "(" + ", ".join(_new_input(spec, x, d) for x in s) + ")"
        if current is not None:
            name, current = current, None
            return name
        return _new_input(spec, s, d)
    if op.is_layer:
        inputs = [tensor(s) for s in example.inputs]   # first: the running tensor is the first input
        # keywords of the application (`need_weights=false`, a tensor `key_padding_mask=x2`) after the inputs
        inputs += [f"{k}={tensor(v) if isinstance(v, TensorSpec) else literal(v)}" for k, v in example.args.items()
                   if op.keyword_input(k) is not None]
        args = ", ".join(f"{k}={literal(v)}" for k, v in op.without_keywords(example.args).items())
        return f"{op.name}({args})({', '.join(inputs)})"
    parts = []
    for p in op.params:
        if p.name not in example.args:
            continue
        v = example.args[p.name]
        if isinstance(v, TensorSpec):
            parts.append(f"{p.name}={tensor(v)}")
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, TensorSpec) for x in v):
            parts.append(f"{p.name}=[{', '.join(tensor(x) for x in v)}]")
        else:
            parts.append(f"{p.name}={literal(v)}")
    return f"{op.name}({', '.join(parts)})"


# ---------------------------------------------------------------- the property

@dataclass
class Result:
    outcome: str          # diagnostic | ran | value_check | size_unmet
    onnx: str = ""        # agrees | unsupported | ""


def check_spec(spec: Spec, path) -> Result:
    """The property for one spec; raises AssertionError (or the unexpected exception) when it fails."""
    import torch
    path.write_text(spec.text)
    try:
        prog = dslc.load(str(path))
    except DslcError as e:
        assert e.render().strip(), "a diagnostic without text"
        return Result("diagnostic")
    graph = prog.graph("M")
    # `B` is the first batched input's own size (the others' examples may have drawn another)
    sizes = {"B": next((s.shape[0] for s, batch in spec.inputs.values() if batch), 1)}
    inputs = [random_input(TensorSpec(graph.type_of(ref).concrete(**sizes), graph.type_of(ref).dtype, s.values))
              for (_, ref), (s, _) in zip(graph.inputs, spec.inputs.values())]
    if unmet(graph.guards, lambda a: sizes.get(getattr(a, "name", None))):
        return Result("size_unmet")
    net = prog.build("M", seed=0).eval()
    try:
        with torch.no_grad():
            out = net(*inputs)
    except (RuntimeError, IndexError, ValueError) as e:
        if VALUE_CHECKS.search(str(e)):
            return Result("value_check")
        raise AssertionError(f"checked, then failed in PyTorch: {type(e).__name__}: {e}\n{spec.text}") from e
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    _same_as_checker(graph, outs, sizes, spec)
    return Result("ran", _onnx_agrees(prog, inputs, outs, spec))


def _same_as_checker(graph, outs: list, sizes: dict, spec: Spec) -> None:
    want = [graph.type_of(ref) for _, ref in graph.outputs]
    flat = [o for o in outs if hasattr(o, "shape")]
    assert len(flat) == len(want), spec.text
    for o, t in zip(flat, want):
        assert tuple(o.shape) == t.concrete(**sizes), (tuple(o.shape), t, spec.text)
        assert str(o.dtype) == f"torch.{t.dtype}", (o.dtype, t, spec.text)


def _onnx_agrees(prog, inputs: list, outs: list, spec: Spec) -> str:
    import numpy as np
    from support import ort_run
    try:
        model = prog.onnx("M", seed=0)   # onnx.checker's full check runs inside
    except DslcError as e:
        assert "ONNX" in e.render() or "onnx" in e.render(), e.render()
        return "unsupported"
    feeds = {i.name: x.numpy() for i, x in zip(model.graph.input, inputs)}
    got = ort_run(model, feeds)
    for g, w in zip(got, outs):
        w = w.float().numpy() if w.dtype == torch_bfloat16() else w.numpy()
        g = np.asarray(g, dtype=np.float32) if w.dtype == np.float32 and g.dtype != np.float32 else g
        if w.dtype.kind in "iub":
            # an index chosen among floats (argmax, topk...) may differ where two values are equal, or
            # equal to within the two backends' rounding (upsampled values): torch leaves ties unspecified.
            # Those ops are compared exactly on their own in tests/test_onnx_ops.py.
            assert np.array_equal(g, w) or ORDERING & set(spec.ops), spec.text
        else:
            limit = 2e-2 if w.dtype == np.float16 or "bfloat16" in spec.text else 1e-3
            assert relative_error(g, w) < limit, (relative_error(g, w), spec.text)
    return "agrees"


def torch_bfloat16():
    import torch
    return torch.bfloat16


# ---------------------------------------------------------------- the property in a plan's step

# every layer, random ones (dropout) too: the property here does not compare values
LAYERS = sorted((op for op in REGISTRY.values() if op.is_layer and op.arbitrary is not None and not op.internal),
                key=lambda op: op.name)
STEP_PLAN = """model M {
    input x: [B, 4]
    Linear(3)
}

train p {
    model  = M()
    data   = iris()
    epochs = 1
    step s {
%s
        loss = mean(h[0].float()) + cross_entropy(model(batch.x), batch.y)
        optimizer = SGD(lr=0.1)
    }
}
"""


def draw_step_spec(op, d) -> Spec:
    """The layer `op` applied in a step to constant tensors shaped as its drawn example's inputs (a
    step has no inputs of its own), beside the plan's model so that the loss has weights to train."""
    spec = Spec("", ops=[op.name])
    call = _call(op, op.arbitrary(d), spec, None, d)
    tensors = [f"        {name} = ones([{', '.join(map(str, s.shape))}], dtype=\"{s.dtype}\")"
               for name, (s, _) in spec.inputs.items()]
    spec.text = STEP_PLAN % "\n".join(tensors + [f"        h = {call}"])
    return spec


def check_step_spec(spec: Spec, path) -> str:
    """`check` passes => the step's generated module runs forward and backward on a batch; a layer that
    plan.py would hold as a module of the step (outside the model) is refused with E0513 instead."""
    import torch

    from dslc.runtime import data as data_mod
    from dslc.runtime.trainer import plan_module, plan_source
    path.write_text(spec.text)
    try:
        plan = dslc.load(str(path)).plan("p")
    except DslcError as e:
        return e.diagnostics[0].code
    module = plan_module(plan, plan_source(plan, str(path)))
    torch.manual_seed(0)
    model = module.MODELS["model"]()
    batch = next(iter(data_mod.batches(data_mod.load("iris", {}).train, 4, shuffle=False, seed=0, epoch=1)))
    loss = module.STEPS["s"](model)(batch["x"], batch["y"])
    loss.backward()
    assert loss.shape == () and all(p.grad is not None for p in model.parameters()), spec.text
    return "ran"
