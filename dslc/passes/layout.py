"""Whole-model settings that passes make: inference only (-O2), and the channels_last layout.

`InferenceOnly` marks the model: the generated module is built in eval mode and
refuses train(), since -O2 rewrites (folded batch norm, dropout removed) are
only equal to the model in eval mode.

`ChannelsLast` (--channels-last) marks a CNN: the generated module stores its
4-d weights channels_last and its forward converts each 4-d input with
`.contiguous(memory_format=torch.channels_last)`, the layout in which many
convolution kernels are fastest (oneDNN on CPUs, cuDNN on GPUs). Values are
unchanged. A model without a 4-d input or a 2-d convolution is left alone, and
the log says why. Asked for by -O2 rather than by the flag (`auto`), it applies
only where 2-d convolutions do most of the work (at least half the model's
MACs): a ViT's one patch convolution is not worth a layout change.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ops.cost import macs_by_op
from .edit import graphs
from .manager import Pass, PassLog

AUTO_SHARE = 0.5        # -O2 picks channels_last when convolutions are at least this share of the MACs
UNKNOWN_SIZE = 32       # the value of a run-time size (H, W, T) when measuring that share


class InferenceOnly(Pass):
    name = "inference"

    def run(self, root: Graph, log: PassLog) -> bool:
        if root.inference:
            return False
        root.inference = True
        log.did(root, "the module runs in eval mode only")
        return True


class ChannelsLast(Pass):
    name = "channels-last"

    def __init__(self, auto: bool = False):
        self.auto = auto

    def run(self, root: Graph, log: PassLog) -> bool:
        if root.memory_format == "channels_last":
            return False
        if not any(t.rank == 4 and t.is_float for t in root.input_types().values()):
            log.skip(root, "channels_last not used: the model has no 4-d input")
            return False
        if not any(n.kind == "op" and _conv2d(n.op) for g in graphs(root) for n in g):
            log.skip(root, "channels_last not used: the model has no 2-d convolution")
            return False
        if self.auto:
            share = conv_share(root)
            if share < AUTO_SHARE:
                log.skip(root, f"channels_last not used: 2-d convolutions are {share:.0%} of the MACs "
                               f"(-O2 uses it from {AUTO_SHARE:.0%}; --channels-last forces it)")
                return False
        root.memory_format = "channels_last"
        log.did(root, "weights and 4-d inputs in the channels_last memory format")
        return True


def conv_share(root: Graph) -> float:
    """The share of the model's MACs (batch 1) in 2-d convolutions."""
    conv = total = 0
    for op, macs in macs_by_op(root, {"B": 1}):
        macs = macs if isinstance(macs, int) else macs.evaluate(lambda atom: UNKNOWN_SIZE)
        total += macs or 0
        conv += (macs or 0) if _conv2d(op) else 0
    return conv / total if total else 0.0


def _conv2d(op) -> bool:
    """A 2-d convolution or transposed convolution: what channels_last speeds up."""
    return op.category in ("conv", "conv_transpose") and op.spatial == 2
