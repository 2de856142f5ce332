"""The pass machinery: a pass, the log of what it did and declined, and the manager that runs
passes to a fixed point, verifying the IR after each."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph
from .verify import verify

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
                    if self.verify and did:   # a pass that changed nothing is checked by the last verify
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
        if self.verify:   # also catches a pass that changed the graph while saying it did not
            verify(root, "the passes")
        result.declined = [e for p in self.passes for e in declined.get(p.name, [])]
        return result
