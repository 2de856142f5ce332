"""Dropout: random zeroing while training, the identity in eval mode.

- Dropout:     each element is zeroed with probability p, survivors scaled by 1 / (1 - p);
- Dropout1d/2d: whole channels (x[n, c]) are zeroed together, for [N, C, L] / [N, C, H, W] maps;
- AlphaDropout: dropped elements are set to SELU's negative saturation value and an affine
                map restores zero mean and unit variance (for self-normalizing networks);
- DropPath:    stochastic depth (Huang et al., 2016): a residual branch is zeroed for a whole
               sample with probability p (survivors scaled by 1 / (1 - p)), as timm's DropPath and
               torchvision's StochasticDepth(mode="row"). torch has no such module, so the
               generated file defines a small one.

The layers stay modules (`self.dropout = nn.Dropout(0.1)`), as people write them;
the function `dropout(x, p)` is `F.dropout(x, p, self.training)`. All are impure:
CSE must not merge two dropouts, nor DCE reorder them.
"""
from __future__ import annotations

from ..ir.dims import plain_float
from . import checks
from .ptypes import FLOAT, TENSOR
from .registry import INPLACE, Example, OpDef, ParamSpec, S, TorchFunction, TorchLayer, helper, register
from .shapes import need_rank

_P = ParamSpec("p", FLOAT, 0.5, checks.probability, "the probability of an element (or channel) being zeroed")
_P_DRAW = (0.0, 0.1, 0.5, 0.9, 1.0)


def _check_rank(name: str, ranks, layout: str):
    """The identity on shapes; the channel-wise variants need their channel layout."""
    def infer(b):
        if ranks is not None:
            need_rank(b.x, ranks, name, layout)
        return [b.x]
    return infer


def _identity_onnx(g, n):
    """Eval mode: every dropout is the identity."""
    return [g.op("Identity", [n.inputs[0]])]


def _dropout_layer(name: str, doc: str, ranks, layout: str, examples, shape_draw):
    register(OpDef(
        name=name, kind="layer", family="dropout", category="dropout", stem="dropout", doc=doc,
        params=(_P, INPLACE), infer=_check_rank(name, ranks, layout), pure=False,
        macs=lambda b, out: 0,
        label=lambda a, n=name: f"{n} {plain_float(a['p']):g}",
        torch=TorchLayer(f"nn.{name}", ("p",), ("inplace",)),  # no `functional`: dropout layers stay modules
        onnx=_identity_onnx,
        examples=examples,
        arbitrary=lambda d: Example({"p": d.choice(_P_DRAW)}, (S(*shape_draw(d)),)),
    ))


_dropout_layer("Dropout", "Zeroes each element with probability p while training (scaling the rest by 1/(1-p)).",
               None, "",
               (Example({}, (S(2, 3, 4),)), Example({"p": 0.1}, (S(2, 8),))),
               lambda d: d.shape(1, 4, 1, 5))
_dropout_layer("Dropout1d", "Zeroes whole channels of [N, C, L] (or unbatched [C, L]) input with probability p.",
               (2, 3), "[N, C, L] or [C, L]",
               (Example({}, (S(2, 3, 5),)), Example({"p": 0.2}, (S(4, 6),))),
               lambda d: d.shape(2, 3, 1, 5))
_dropout_layer("Dropout2d", "Zeroes whole channels of [N, C, H, W] input with probability p.",
               (4,), "[N, C, H, W]",
               (Example({}, (S(2, 3, 4, 4),)), Example({"p": 0.25}, (S(2, 2, 3, 5),))),
               lambda d: (2,) + d.shape(3, 3, 1, 4))
_dropout_layer("AlphaDropout", "Dropout that keeps zero mean and unit variance (for SELU networks).",
               None, "",
               (Example({}, (S(2, 6),)), Example({"p": 0.2}, (S(2, 3, 4),))),
               lambda d: d.shape(1, 4, 1, 5))


register(OpDef(
    name="dropout", kind="function", family="dropout", category="dropout",
    doc="Zeroes each element with probability p while the module is training (F.dropout).",
    params=(ParamSpec("input", TENSOR), _P, INPLACE),
    infer=lambda b: [b.x], pure=False,
    macs=lambda b, out: 0,
    # Generated code runs inside an nn.Module's forward, so `self.training` follows train()/eval().
    torch=TorchFunction(lambda e: f"F.dropout({e.arg('input')}, {e.fmt(e.args['p'])}, self.training"
                                  f"{', inplace=True' if e.args['inplace'] else ''})"),
    onnx=_identity_onnx,
    examples=(Example({"input": S(2, 3, 4), "p": 0.1}), Example({"input": S(2, 5)})),
    arbitrary=lambda d: Example({"input": S(*d.shape(1, 4, 1, 5)), "p": d.choice(_P_DRAW)}),
))


helper("DropPath", '''
    class DropPath(nn.Module):
        """Stochastic depth: while training, zero the whole input of a sample with probability p
        (a residual branch, so the sample skips it) and scale the kept ones by 1 / (1 - p)."""

        def __init__(self, p: float = 0.0):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0.0:
                return x
            keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
            return x * keep.div_(1.0 - self.p) if self.p < 1.0 else x * keep
''')

register(OpDef(
    name="DropPath", kind="layer", family="dropout", category="dropout", stem="drop_path",
    doc="Stochastic depth: zeroes a residual branch for a whole sample with probability p while training "
        "(the rest scaled by 1/(1-p)); the identity in eval mode.",
    params=(ParamSpec("p", FLOAT, 0.0, checks.probability, "the probability of a sample's branch being zeroed"),),
    infer=_check_rank("DropPath", None, ""), pure=False,
    macs=lambda b, out: 0,
    label=lambda a: f"DropPath {plain_float(a['p']):g}",
    torch=TorchLayer("DropPath", ("p",), helpers=("DropPath",)),
    onnx=_identity_onnx,
    examples=(Example({"p": 0.1}, (S(4, 3, 5),)), Example({}, (S(2, 8),))),
    arbitrary=lambda d: Example({"p": d.choice(_P_DRAW)}, (S(*d.shape(1, 4, 1, 5)),)),
))
