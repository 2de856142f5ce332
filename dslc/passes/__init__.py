"""Optimization passes over the IR, and the manager that runs them.

`optimize(graph, level)` copies the graph (the original, which `Program`
caches, is never touched), runs the level's passes and returns the copy with
a log. The manager runs each pass until it changes nothing, then the whole
list again until no pass changes anything (a fixed point), and verifies the
IR after every run of a pass (dslc/passes/verify.py).

Levels (`dslc compile -O0/-O1/-O2`, `prog.source(..., opt=N)`):
  -O0  nothing: the code is exactly the unoptimized program's (the default);
  -O1  no-op removal, constant folding, common subexpressions, dead code, and
       `attention` through torch's scaled_dot_product_attention: the same
       function in training and in eval mode;
  -O2  for inference: -O1, plus dropout removed and batch norm folded into the
       convolution or linear layer before it. The module runs in eval mode only.
`channels_last=True` (`--channels-last`) adds the channels_last memory format
for CNNs at any level; None (the default) lets -O2 choose it for models whose
MACs are mostly 2-d convolutions; False (`--no-channels-last`) never uses it.

Every pass logs what it rewrote and why a candidate was left alone, so
`dslc compile --dump-ir` can say "bn1 not folded: conv1's output has another user".
"""
from __future__ import annotations

from ..ir.clone import clone
from ..ir.graph import Graph
from .attention import ScaledDotProduct
from .constants import ConstantFolding
from .cse import CommonSubexpressions
from .dce import DeadCode
from .fold_bn import FoldBatchNorm
from .layout import ChannelsLast, InferenceOnly
from .manager import Entry, Pass, PassLog, PassManager, Result
from .noops import NoOps
from .verify import VerifyError, verify

LEVELS = (0, 1, 2)


def pipeline(level: int, channels_last: bool | None = None) -> list:
    """The passes of an -O level, in order."""
    if level not in LEVELS:
        raise ValueError(f"no optimization level {level} (levels: 0, 1, 2)")
    passes: list = []
    if level >= 2:
        passes.append(InferenceOnly())
    if level >= 1:
        passes += [NoOps(inference=level >= 2), ConstantFolding(), CommonSubexpressions()]
    if level >= 2:
        passes.append(FoldBatchNorm())
    if level >= 1:
        passes += [DeadCode(), ScaledDotProduct()]
    if channels_last or (channels_last is None and level >= 2):
        passes.append(ChannelsLast(auto=channels_last is None))
    return passes


def optimize(graph: Graph, level: int = 1, channels_last: bool | None = None, verify: bool = True) -> Result:
    """A copy of `graph` optimized at `level` (the original is not changed)."""
    root = clone(graph)
    result = PassManager(pipeline(level, channels_last), verify=verify).run(root, level)
    root.opt_level = level
    return result


__all__ = ["Entry", "LEVELS", "Pass", "PassLog", "PassManager", "Result", "VerifyError", "optimize", "pipeline",
           "verify"]
