"""What torch.nn has that dslc's library does not, and the closest of ours to suggest.

Written out, since the checker does not import torch: tests/test_layer_names.py checks that
these and the registry's layers are exactly the installed torch.nn's modules, so a torch
that adds a layer (or a registry that gains one of these) fails there first.
"""
from __future__ import annotations

_LOSS = "losses are functions in dslc, applied to the output and the target"
_LAZY = "dslc's layers infer their input sizes, as torch's lazy layers do"
_BLOCK = "a `block` is dslc's module: its body applies layers in order, or names what they compute"
_NO_LOSS = "dslc's losses are listed in docs/reference.md#losses"

# torch.nn layer -> (the closest of ours, or None; what to add). Every torch.nn module class that is not
# one of our layers is here.
TORCH_ONLY: dict[str, tuple[str | None, str | None]] = {
    "AdaptiveAvgPool3d": ("AdaptiveAvgPool2d", None),
    "AdaptiveLogSoftmaxWithLoss": ("LogSoftmax", "with `nll` as the loss"),
    "AdaptiveMaxPool3d": ("AdaptiveMaxPool2d", None),
    "AvgPool3d": ("AvgPool2d", None),
    "BCELoss": ("bce", _LOSS),
    "BCEWithLogitsLoss": ("bce_with_logits", _LOSS),
    "CELU": ("ELU", None),
    "CTCLoss": (None, _NO_LOSS),
    "ChannelShuffle": ("PixelShuffle", "or `reshape` and `transpose`"),
    "Container": (None, _BLOCK),
    "ConvTranspose3d": ("ConvTranspose2d", None),
    "CosineEmbeddingLoss": ("cosine_embedding", _LOSS),
    "CosineSimilarity": ("normalize", "`sum(normalize(a, dim=1) * normalize(b, dim=1), dim=1)`"),
    "CrossEntropyLoss": ("cross_entropy", _LOSS),
    "CrossMapLRN2d": ("GroupNorm", None),
    "DataParallel": (None, "data parallelism belongs to training, not to the model"),
    "Dropout3d": ("Dropout2d", None),
    "EmbeddingBag": ("Embedding", "then `sum` or `mean` over the bag's dimension"),
    "FeatureAlphaDropout": ("AlphaDropout", None),
    "Fold": ("reshape", None),
    "FractionalMaxPool2d": ("MaxPool2d", None),
    "FractionalMaxPool3d": ("MaxPool2d", None),
    "GLU": ("chunk", "`a, b = chunk(x, 2, dim=-1)`, then `a * sigmoid(b)`"),
    "GaussianNLLLoss": (None, _NO_LOSS),
    "Hardshrink": ("where", None),
    "Hardtanh": ("clamp", "`clamp(x, -1.0, 1.0)`"),
    "HingeEmbeddingLoss": (None, _NO_LOSS),
    "HuberLoss": ("huber", _LOSS),
    "InstanceNorm3d": ("InstanceNorm2d", None),
    "KLDivLoss": ("kl_div", _LOSS),
    "L1Loss": ("l1", _LOSS),
    "LPPool1d": ("AvgPool1d", None),
    "LPPool2d": ("AvgPool2d", None),
    "LPPool3d": ("AvgPool2d", None),
    "LazyBatchNorm1d": ("BatchNorm1d", _LAZY),
    "LazyBatchNorm2d": ("BatchNorm2d", _LAZY),
    "LazyBatchNorm3d": ("BatchNorm3d", _LAZY),
    "LazyConv1d": ("Conv1d", _LAZY),
    "LazyConv2d": ("Conv2d", _LAZY),
    "LazyConv3d": ("Conv3d", _LAZY),
    "LazyConvTranspose1d": ("ConvTranspose1d", _LAZY),
    "LazyConvTranspose2d": ("ConvTranspose2d", _LAZY),
    "LazyConvTranspose3d": ("ConvTranspose2d", _LAZY),
    "LazyInstanceNorm1d": ("InstanceNorm1d", _LAZY),
    "LazyInstanceNorm2d": ("InstanceNorm2d", _LAZY),
    "LazyInstanceNorm3d": ("InstanceNorm2d", _LAZY),
    "LazyLinear": ("Linear", _LAZY),
    "LinearCrossEntropyLoss": ("cross_entropy", "after a `Linear`"),
    "LocalResponseNorm": ("GroupNorm", None),
    "LogSigmoid": ("sigmoid", "`log(sigmoid(x))`"),
    "MSELoss": ("mse", _LOSS),
    "MarginRankingLoss": (None, _NO_LOSS),
    "MaxPool3d": ("MaxPool2d", None),
    "MaxUnpool1d": ("Upsample", None),
    "MaxUnpool2d": ("Upsample", None),
    "MaxUnpool3d": ("Upsample", None),
    "Module": (None, _BLOCK),
    "ModuleDict": (None, "`for` and `repeat` unroll layers at compile time"),
    "ModuleList": (None, "`for` and `repeat` unroll layers at compile time"),
    "MultiLabelMarginLoss": ("bce_with_logits", None),
    "MultiLabelSoftMarginLoss": ("bce_with_logits", None),
    "MultiMarginLoss": ("cross_entropy", None),
    "NLLLoss": ("nll", _LOSS),
    "NLLLoss2d": ("nll", _LOSS),
    "PairwiseDistance": ("sqrt", "`sqrt(sum((a - b) ** 2, dim=-1))`"),
    "ParameterDict": (None, "`param name: [shape]` declares a learnable tensor"),
    "ParameterList": (None, "`param name: [shape]` declares a learnable tensor"),
    "PoissonNLLLoss": (None, _NO_LOSS),
    "RMSNorm": ("LayerNorm", "or, with a `param` weight, `x / sqrt(mean(x ** 2, dim=-1, keepdim=true) + eps) * weight`"),
    "RNNBase": ("RNN", None),
    "RNNCellBase": ("RNN", None),
    "RReLU": ("LeakyReLU", None),
    "Sequential": (None, _BLOCK),
    "SmoothL1Loss": ("smooth_l1", _LOSS),
    "SoftMarginLoss": ("bce_with_logits", None),
    "Softmax2d": ("Softmax", "`Softmax(dim=1)`: over the channels"),
    "Softmin": ("Softmax", "of `-x`"),
    "Softshrink": ("where", None),
    "Softsign": ("abs", "`x / (1 + abs(x))`"),
    "SyncBatchNorm": ("BatchNorm2d", None),
    "Tanhshrink": ("Tanh", "`x - tanh(x)`"),
    "Threshold": ("where", None),
    "TripletMarginLoss": ("triplet_margin", _LOSS),
    "TripletMarginWithDistanceLoss": ("triplet_margin", None),
    "Unfold": ("Conv2d", "unfolding and a matrix product are usually a convolution"),
}

# Names a port from PyTorch puts before a layer or function (`nn.Linear`, `F.relu`, `torch.cat`).
TORCH_PREFIXES = ("nn", "F", "torch", "functional")


def torch_only_help(name: str) -> str:
    """The help for a torch.nn layer dslc does not have: the closest of ours, and how to use it."""
    closest, note = TORCH_ONLY[name]
    if closest is None:
        return note
    return f"the closest of dslc's is `{closest}`" + (f": {note}" if note else "")
