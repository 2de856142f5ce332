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

from dataclasses import dataclass, field

from ..ir.clone import clone
from ..ir.graph import Graph
from .verify import VerifyError, verify

LEVELS = (0, 1, 2)
MAX_ROUNDS = 50


@dataclass(frozen=True)
class Entry:
    """One line of a pass log: a rewrite (applied) or a candidate left alone, with the reason."""
    pass_name: str
    graph: str
    applied: bool
    text: str

    def __str__(self) -> str:
        return f"{self.pass_name}: {self.graph}: {self.text}"


class PassLog:
    """What one run of one pass did."""

    def __init__(self, pass_name: str):
        self.pass_name = pass_name
        self.applied: list[Entry] = []
        self.declined: list[Entry] = []

    def did(self, graph: Graph, text: str) -> None:
        self.applied.append(Entry(self.pass_name, graph.name, True, text))

    def skip(self, graph: Graph, text: str) -> None:
        entry = Entry(self.pass_name, graph.name, False, text)
        if entry not in self.declined:
            self.declined.append(entry)


class Pass:
    """A rewrite of the whole graph tree; `run` returns whether it changed anything."""
    name = "pass"

    def run(self, root: Graph, log: PassLog) -> bool:
        raise NotImplementedError


@dataclass
class Result:
    graph: Graph
    level: int
    applied: list = field(default_factory=list)    # Entry, in the order the rewrites happened
    declined: list = field(default_factory=list)   # Entry: candidates left alone in the final IR, and why
    rounds: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def report(self) -> str:
        lines = [f"applied   {e}" for e in self.applied] + [f"not done  {e}" for e in self.declined]
        return "\n".join(lines) + ("\n" if lines else "")


class PassManager:
    """Runs passes to a fixed point, verifying the IR after each run of a pass."""

    def __init__(self, passes: list, verify: bool = True, max_rounds: int = MAX_ROUNDS):
        self.passes, self.verify, self.max_rounds = list(passes), verify, max_rounds

    def run(self, root: Graph, level: int = 0) -> Result:
        result = Result(root, level)
        if self.verify:
            verify(root, "building the IR")
        declined: dict = {}
        for rounds in range(1, self.max_rounds + 1):
            changed = False
            for p in self.passes:
                for _ in range(self.max_rounds):
                    log = PassLog(p.name)
                    did = p.run(root, log)
                    if self.verify:
                        verify(root, f"the pass `{p.name}`")
                    result.applied += log.applied
                    if not did:
                        declined[p.name] = log.declined
                        break
                    changed = True
                else:
                    raise RuntimeError(f"the pass `{p.name}` does not reach a fixed point")
            result.rounds = rounds
            if not changed:
                break
        else:
            raise RuntimeError("the passes do not reach a fixed point")
        result.declined = [e for p in self.passes for e in declined.get(p.name, [])]
        return result


def pipeline(level: int, channels_last: bool | None = None) -> list:
    """The passes of an -O level, in order."""
    from .attention import ScaledDotProduct
    from .constants import ConstantFolding
    from .cse import CommonSubexpressions
    from .dce import DeadCode
    from .fold_bn import FoldBatchNorm
    from .layout import ChannelsLast, InferenceOnly
    from .noops import NoOps
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
