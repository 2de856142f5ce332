"""`dslc check` ok => PyTorch runs => onnxruntime agrees, over random specs composed from the registry
(tests/soundness.py; tools/soundness.py runs many more by hand)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from soundness import LAYERS, RandomDrawer, check_spec, check_step_spec, draw_spec, draw_step_spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(data=st.data())
def test_a_spec_that_checks_runs_in_pytorch_and_agrees_with_onnxruntime(tmp_path, data):
    check_spec(draw_spec(data), tmp_path / "random.dl")


@pytest.mark.parametrize("expr", ["argmax(x, dim=1)", "argmin(x, dim=-1, keepdim=true)", "argmax(x)",
                                  "amax(x, dim=1)", "amin(x)", "x -> MaxPool1d(2)",
                                  "x -> MaxPool1d(3, stride=1, padding=1)", "x -> MaxPool1d(2, dilation=2)",
                                  "x -> AdaptiveMaxPool1d(4)", "x -> AdaptiveMaxPool1d(1)", "x -> AdaptiveMaxPool1d(3)"])
def test_nan_wins_in_onnx_as_in_torch(tmp_path, expr):
    """torch's max-like reductions and max pools give NaN (argmax: its index) where what they reduce
    holds one; onnxruntime's own kernels skip NaNs, so the ONNX backend adds that back."""
    import numpy as np
    import torch
    from support import ort_run

    import dslc
    path = tmp_path / "nan.dl"
    path.write_text(f"model M {{\n    input x: [B, 3, 6]\n    y = {expr}\n    output y\n}}\n")
    prog = dslc.load(str(path))
    x = torch.randn(2, 3, 6)
    x[0, 1, 2] = x[1, 2, 5] = x[1, 0, 0] = float("nan")
    with torch.no_grad():
        want = prog.build("M", seed=0).eval()(x).numpy()
    got = ort_run(prog.onnx("M", seed=0), {"x": x.numpy()})[0]
    assert got.shape == want.shape and np.array_equal(got, want, equal_nan=True), (got, want)


@pytest.mark.parametrize("decl,line,torch_fn", [
    ("input x: [B, 4]", "y = 1 - (x > 0)", lambda x: 1 - (x > 0)),
    ("input x: [B, 4]", "y = -(x > 0)", lambda x: -(x > 0)),
    ("input x: [B, 4]", "y = (x > 0) ** (x < 1)", lambda x: (x > 0) ** (x < 1)),
    ("input x: [B, 4] of float64", "y = x -> Linear(2)", lambda x: torch_linear(x)),
    ("input x: [B, 4] of float64", "y = x @ ones([4, 2])", lambda x: x @ __import__("torch").ones(4, 2)),
])
def test_what_torch_refuses_is_a_diagnostic_at_check_time(tmp_path, decl, line, torch_fn):
    """Each of these fails in PyTorch (shown here on the same input); `check` says so, at the line."""
    import torch

    import dslc
    from dslc.diagnostics import DslcError
    x = torch.randn(2, 4, dtype=torch.float64 if "float64" in decl else torch.float32)
    with pytest.raises((RuntimeError, TypeError)):
        torch_fn(x)
    path = tmp_path / "bad.dl"
    path.write_text(f"model M {{\n    {decl}\n    {line}\n    output y\n}}\n")
    with pytest.raises(DslcError) as err:
        dslc.load(str(path))
    assert "E0310" in err.value.render() and "bad.dl:3:" in err.value.render()


def torch_linear(x):
    import torch
    return torch.nn.Linear(4, 2)(x)


@pytest.mark.parametrize("expr", ["argmin(amin(x), dim=-1)", "argmax(amax(x), dim=0, keepdim=true)"])
def test_arg_reductions_of_a_zero_d_tensor(tmp_path, expr):
    """torch's argmax/argmin of a 0-d tensor along dim 0 or -1 is 0; ONNX's ArgMax refuses rank 0, so the
    backend writes the constant (found by tools/soundness.py, seed 47)."""
    import torch
    from support import ort_run

    import dslc
    path = tmp_path / "zero_d.dl"
    path.write_text(f"model M {{\n    input x: [B, 3, 2]\n    output {expr}\n}}\n")
    prog = dslc.load(str(path))
    x = torch.randn(2, 3, 2)
    want = prog.build("M", seed=0).eval()(x).numpy()
    got = ort_run(prog.onnx("M", seed=0), {"x": x.numpy()})[0]
    assert got.shape == want.shape == () and got.dtype == want.dtype and got == want == 0


@pytest.mark.parametrize("layer", [op.name for op in LAYERS])
def test_a_layer_in_a_step_runs_or_is_refused_where_it_is_made(tmp_path, layer):
    """Each layer of the registry applied in a plan's step: the layers plan.py writes as functions
    (`ReLU()` is `F.relu`) run there; those it would hold as modules of the step, outside the model
    (weights no optimizer trains, a `Dropout` evaluation never switches off), are E0513 at `check`."""
    import random

    from dslc.ops import REGISTRY
    op = REGISTRY[layer]
    want = "E0513" if op.is_module(named=False) else "ran"
    outcomes = []
    for seed in range(20):   # a drawn example may not fit its layer (a padding wider than the input)
        outcomes.append(check_step_spec(draw_step_spec(op, RandomDrawer(random.Random(seed))), tmp_path / "step.dl"))
        if outcomes[-1] in ("ran", "E0513"):
            break
    assert outcomes[-1] == want, outcomes
