"""ONNX export of the conv and pooling families beyond the one-op conformance test: whole `.dl`
models with run-time sizes (the batch `B`, a length `T`, an image's `H`, `W`), run in onnxruntime
at several sizes against the PyTorch module built with the same seed, and the edge cases where
torch's CPU kernels and onnxruntime's Resize/pools disagree unless the lowering steps around them."""
from __future__ import annotations

import numpy as np
import pytest
from support import onnx_parity, ort_run, relative_error, single_op_graph

from dslc.ops import REGISTRY
from dslc.ops.registry import Example, S

TOLERANCE = 1e-4

CNN = """
model Cnn {
    input x: [B, 3, 12, 10]
    Conv2d(8, 3, padding=1, padding_mode="reflect")
    ReLU()
    MaxPool2d(3, stride=2, padding=1, ceil_mode=true)
    Conv2d(8, [2, 3], padding="same", padding_mode="circular", groups=2)
    AvgPool2d(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)
    ConvTranspose2d(4, 3, stride=2, padding=1, output_padding=1, groups=2)
    Upsample(scale_factor=2.0, mode="bilinear")
    PixelShuffle(2)
    Conv2d(4, 3, padding=[1, 2], padding_mode="replicate")
    AdaptiveAvgPool2d([3, none])
    AdaptiveMaxPool2d(1)
    Flatten()
    Linear(5)
}
"""

SEQUENCE = """
model Seq {
    input x: [B, 4, T]
    h = x -> Conv1d(6, 3, padding=2, padding_mode="circular") -> Conv1d(6, 3, padding=1, padding_mode="reflect")
    h = h -> Conv1d(6, 4, padding="same", padding_mode="replicate", dilation=2)
    h = h -> MaxPool1d(3, stride=2, padding=1, ceil_mode=true) -> AvgPool1d(3, stride=2, padding=1, ceil_mode=true)
    h = h -> ConvTranspose1d(6, 4, stride=2, padding=1, output_padding=1)
    h = h -> Upsample(scale_factor=1.5, mode="linear") -> Upsample(scale_factor=1.5)
    h = h -> Upsample(scale_factor=0.75, mode="linear", align_corners=true)
    h = h -> AvgPool1d(2, ceil_mode=true, count_include_pad=false)
    output h -> AdaptiveAvgPool1d(5), h -> AdaptiveMaxPool1d(3)
}
"""

IMAGE = """
model Image {
    input x: [B, 4, H, W]
    u = x -> Conv2d(8, 3, padding=1, padding_mode="circular") -> Upsample(scale_factor=[2.0, 1.5])
    p = u -> PixelShuffle(2)
    m = u -> MaxPool2d(2, stride=3, dilation=2, ceil_mode=true)
    s = x -> AdaptiveMaxPool2d([2, 3])
    t = x -> AdaptiveAvgPool2d([none, 4])
    v = x -> Upsample(scale_factor=1.25, mode="bicubic")
    w = x -> Upsample(scale_factor=[1.5, 1.25], mode="bilinear")
    output p, m, s, t, v, w
}
"""


def _models(tmp_path, text: str, name: str):
    import dslc
    path = tmp_path / f"{name.lower()}.dl"
    path.write_text(text)
    prog = dslc.load(str(path))
    return prog.onnx(name), prog.build(name, seed=0).eval()


def _compare(model, net, shapes: list[tuple]) -> None:
    import torch
    torch.manual_seed(1)
    inputs = [torch.randn(*s) for s in shapes]
    with torch.no_grad():
        want = net(*inputs)
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    got = ort_run(model, {i.name: x.numpy() for i, x in zip(model.graph.input, inputs)})
    assert len(got) == len(want)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape, (shapes, g_.shape, w_.shape)
        assert relative_error(g_, w_) < TOLERANCE, shapes


def test_cnn_with_a_run_time_batch(tmp_path):
    model, net = _models(tmp_path, CNN, "Cnn")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"
    for batch in (1, 2, 5):
        _compare(model, net, [(batch, 3, 12, 10)])


def test_sequence_with_a_run_time_length(tmp_path):
    """Circular and reflect padding, ceil-mode pools, upsampling and adaptive bins over a run-time T."""
    model, net = _models(tmp_path, SEQUENCE, "Seq")
    for batch, length in ((1, 3), (2, 4), (2, 7), (3, 10), (1, 16), (2, 33)):
        _compare(model, net, [(batch, 4, length)])


def test_image_with_run_time_height_and_width(tmp_path):
    """Nearest upsampling with torch's 2-d copies and halvings (decided at run time: out_H + out_W ≤ 128),
    bicubic where every output size may equal the input's, adaptive bins over run-time sizes."""
    model, net = _models(tmp_path, IMAGE, "Image")
    for h, w in ((1, 1), (2, 3), (3, 3), (4, 2), (5, 7), (9, 4), (40, 30), (70, 45)):
        _compare(model, net, [(2, 4, h, w)])


def _parity(op_name: str, args: dict, shape: tuple) -> float:
    graph, specs = single_op_graph(REGISTRY[op_name], Example(args, (S(*shape),)))
    return onnx_parity(graph, specs)


@pytest.mark.parametrize("args,shape", [
    ({"scale_factor": [1.0, 1.25]}, (1, 2, 4, 3)),        # torch's 2-d kernel copies W (3 → 3)
    ({"scale_factor": [2.3, 1.0]}, (1, 2, 3, 5)),         # ... and halves H (3 → 6) whatever the factor
    ({"scale_factor": [2.3, 1.0]}, (1, 2, 70, 5)),        # not past 128 output pixels
    ({"scale_factor": 1.25}, (1, 2, 3, 3, 3)),            # 3-d never copies; onnxruntime would
    ({"scale_factor": 0.18}, (1, 2, 56)),                 # ⌊9 · float(1/0.18)⌋ = 49, 9 / 0.18 = 50
    ({"size": 82}, (1, 2, 2)),                            # float(2/82) · 41 just under 1
    ({"scale_factor": 1.3, "mode": "bilinear"}, (1, 2, 10, 3)),   # ⌊10 · 1.3⌋ = 13, ⌊10 · 1.3f⌋ = 12 in double
    ({"scale_factor": [1.1, 1.1], "mode": "bicubic"}, (1, 2, 4, 3)),  # same shape, yet interpolated
    ({"scale_factor": 1.25, "mode": "bilinear"}, (1, 2, 3, 3)),   # same shape: copied
    ({"scale_factor": [1.7, 1.25], "mode": "bicubic", "align_corners": True}, (1, 1, 5, 6)),
    ({"size": [1, 7], "mode": "bicubic"}, (2, 3, 4, 4)),
    ({"size": [6, 2, 1], "mode": "trilinear", "align_corners": True}, (1, 2, 3, 1, 4)),
])
def test_upsample_edge_cases(args, shape):
    assert _parity("Upsample", args, shape) < TOLERANCE


@pytest.mark.parametrize("op,args,shape", [
    ("MaxPool2d", {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}, (3, 4, 4)),  # last window dropped
    ("AvgPool2d", {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}, (2, 3, 4, 4)),
    ("AvgPool1d", {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True, "count_include_pad": True},
     (2, 3, 6)),
    ("AdaptiveAvgPool2d", {"output_size": [4, 3]}, (2, 3, 7, 9)),     # bins for H, a plain pool for W
    ("AdaptiveMaxPool2d", {"output_size": [7, 1]}, (3, 5, 4)),        # more bins than rows, unbatched
    ("AdaptiveAvgPool1d", {"output_size": 3}, (2, 3, 3)),             # the identity
    ("PixelShuffle", {"upscale_factor": 2}, (2, 2, 8, 3, 4)),          # rank 5
    ("PixelShuffle", {"upscale_factor": 3}, (9, 2, 2)),                # rank 3
])
def test_pool_edge_cases(op, args, shape):
    assert _parity(op, args, shape) < TOLERANCE


def test_max_pool_window_of_padding_only():
    """Dilated taps can all fall in the padding: torch gives −∞ there (onnxruntime's own padding, −FLT_MAX)."""
    import torch
    from support import run_generated

    from dslc.backends.onnx_emit import emit_model
    graph, specs = single_op_graph(REGISTRY["MaxPool1d"], Example(
        {"kernel_size": 2, "padding": 1, "dilation": 2, "stride": 1}, (S(2, 3, 1),)))
    _, (want,), _ = run_generated(graph, specs)
    torch.manual_seed(1)  # the inputs run_generated drew
    x = torch.randn(2, 3, 1)
    got = ort_run(emit_model(graph, {}), {graph.inputs[0][0]: x.numpy()})[0]
    assert np.isneginf(want.numpy()).all()
    np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize("op,args,shape", [
    ("ConvTranspose1d", {"out_channels": 4, "kernel_size": 3, "output_padding": 2, "dilation": 3, "padding": 1},
     (2, 2, 5)),  # output_padding ≥ stride (below the dilation): onnxruntime refuses it as an attribute
    ("ConvTranspose2d", {"out_channels": 4, "kernel_size": 2, "output_padding": [1, 0], "dilation": [2, 1],
                         "stride": [1, 2], "padding": [0, 1], "groups": 2}, (2, 2, 3, 4)),
    ("Conv1d", {"out_channels": 2, "kernel_size": 3, "padding": 4, "padding_mode": "circular"}, (2, 1, 4)),
    ("Conv2d", {"out_channels": 3, "kernel_size": [2, 4], "padding": "same", "padding_mode": "reflect",
                "dilation": [3, 1]}, (1, 3, 5, 6)),
    ("Conv3d", {"out_channels": 2, "kernel_size": 2, "padding": "same", "padding_mode": "circular"},
     (1, 2, 3, 4, 2)),
])
def test_conv_edge_cases(op, args, shape):
    assert _parity(op, args, shape) < TOLERANCE
