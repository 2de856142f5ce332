"""`dslc check` ok => PyTorch runs => onnxruntime agrees, over random specs composed from the registry
(tests/soundness.py; tools/soundness.py runs many more by hand)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from soundness import check_spec, draw_spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(data=st.data())
def test_a_spec_that_checks_runs_in_pytorch_and_agrees_with_onnxruntime(tmp_path, data):
    check_spec(draw_spec(data), tmp_path / "random.dl")


@pytest.mark.parametrize("expr", ["argmax(x, dim=1)", "argmin(x, dim=-1, keepdim=true)", "argmax(x)",
                                  "amax(x, dim=1)", "amin(x)", "x -> MaxPool1d(2)",
                                  "x -> MaxPool1d(3, stride=1, padding=1)", "x -> MaxPool1d(2, dilation=2)"])
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
