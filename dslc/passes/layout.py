"""Whole-model settings that passes make: inference only (-O2), and the channels_last layout.

`InferenceOnly` marks the model: the generated module is built in eval mode and
refuses train(), since -O2 rewrites (folded batch norm, dropout removed) are
only equal to the model in eval mode.

`ChannelsLast` (--channels-last) marks a CNN: the generated module stores its
4-d weights channels_last and its forward converts each 4-d input with
`.contiguous(memory_format=torch.channels_last)`, the layout in which many
convolution kernels are fastest. Values are unchanged. A model without a 4-d
input or a 2-d convolution is left alone, and the log says why.
"""
from __future__ import annotations

from ..ir.graph import Graph
from . import Pass, PassLog
from .edit import graphs

CONVS = ("Conv2d", "ConvTranspose2d")


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

    def run(self, root: Graph, log: PassLog) -> bool:
        if root.memory_format == "channels_last":
            return False
        if not any(t.rank == 4 and t.is_float for t in root.input_types().values()):
            log.skip(root, "channels_last not used: the model has no 4-d input")
            return False
        if not any(n.kind == "op" and n.op.name in CONVS for g in graphs(root) for n in g):
            log.skip(root, "channels_last not used: the model has no 2-d convolution")
            return False
        root.memory_format = "channels_last"
        log.did(root, "weights and 4-d inputs in the channels_last memory format")
        return True
