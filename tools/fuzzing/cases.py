"""Cases (what a worker runs) and outcomes (what it reports), and how case number i of a run is made.

Case i depends only on (run seed, i): any case of a long run can be made again on its own
(`tools/fuzz.py --case I --seed S`).
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field, replace

from .generators import GENERATORS
from .mutate import mutate, to_bytes
from .seeds import MUTANT_NAME, Seed

CLASSES = ("ok", "clean", "value", "internal", "hang", "memory")
PHASES = ("load", "source", "summary", "passes", "build", "forward", "onnx", "render", "cli", "fuzzer")
FAILURES = ("internal", "hang", "memory")
WEIRD_VALUES = ["0", "-1", "10**30", "9 ** 9 ** 9", "1e308", '"x"', "[", "None", "[1, 2]", "true", "{", "x" * 300,
                "\x01", "\u202e", "2**64", "-", ""]      # (no NUL: no program can pass one in an argument)

WEIRD_INTS = ["0", "-1", "1", "18446744073709551616", "9223372036854775808", "-9223372036854775809",
              "100000000000000000000000"]
NUMBER_FLAGS = {"compile": "--seed", "summary": "--size", "render": "--depth"}   # a number flag of each command
NUMBER_FORMS = {"compile": "{}", "summary": "T={}", "render": "{}"}


@dataclass(frozen=True)
class Case:
    index: int
    origin: str                    # the seed's path, or gen:NAME
    operators: tuple = ()
    files: dict = field(default_factory=dict)   # path relative to the mirror -> bytes
    main: str = ""                 # the file to load
    deep: bool = False             # also build, run forward and export ONNX
    mode: str = "api"              # api: in-process; cli: the dslc command in a subprocess
    argv: tuple = ()               # cli: arguments, with {file} and {out} to fill in


@dataclass(frozen=True)
class Outcome:
    cls: str                       # ok | clean | value | internal | hang | memory
    etype: str = ""                # the exception's type (or Timeout, SIGSEGV, exit status)
    message: str = ""
    frame: str = ""                # the innermost dslc frame, file:function
    where: str = ""                # the same frame, file:line
    phase: str = ""                # one of PHASES: where the case was
    seconds: float = 0.0
    codes: tuple = ()              # clean: the diagnostics' codes

    def __post_init__(self) -> None:
        if self.cls not in CLASSES:
            raise ValueError(f"unknown outcome class {self.cls}")

    @property
    def failed(self) -> bool:
        return self.cls in FAILURES


def signature(case: Case, outcome: Outcome) -> tuple:
    """Failures with the same signature are one bug (for the report and the minimizer)."""
    return (case.mode, outcome.cls, outcome.etype, outcome.frame)


def make_case(run_seed: int, index: int, seeds: list[Seed], deep: float = 0.5, generated: float = 0.03) -> Case:
    """Case `index` of a run: a structural generator's program (a `generated` fraction), else a seed
    mutated by one to three operators, written beside its seed (so its imports resolve)."""
    rng = random.Random(f"{run_seed}:{index}")
    if rng.random() < generated:
        name = rng.choice(sorted(GENERATORS))
        files, main = GENERATORS[name](rng)
        return Case(index, f"gen:{name}", (name,), {p: to_bytes(t) for p, t in files.items()}, main,
                    rng.random() < deep)
    seed = rng.choice(seeds)
    text, applied = mutate(rng, seed.text, rng.choice([1, 1, 1, 1, 2, 3]))
    main = os.path.join(seed.folder, MUTANT_NAME)
    return Case(index, seed.path, tuple(applied), {main: to_bytes(text)}, main, rng.random() < deep)


def with_text(case: Case, text: bytes) -> Case:
    """The same case with another main file (the minimizer's candidates)."""
    return replace(case, files={**case.files, case.main: text})


def cli_case(case: Case, rng: random.Random) -> Case:
    """The same files through a random `dslc` command, sometimes with --model, odd --set values and odd
    numbers for --seed, --size or --depth."""
    text = case.files[case.main].decode("utf-8", "replace")
    command = rng.choice(["check", "compile", "summary", "render"])
    argv = [command, "{file}"] + _outputs(command, rng)
    models = re.findall(r"\bmodel\s+(\w+)", text)
    params = re.findall(r"[(,]\s*(\w+)\s*:", text)
    if command != "check" and models and rng.random() < 0.3:
        argv += ["--model", rng.choice(models)]
    if command != "check" and params and rng.random() < 0.3:
        argv += ["--set", f"{rng.choice(params)}={rng.choice(WEIRD_VALUES)}"]
    if command in NUMBER_FLAGS and rng.random() < 0.3:
        argv += [NUMBER_FLAGS[command], NUMBER_FORMS[command].format(rng.choice(WEIRD_INTS))]
    return replace(case, mode="cli", argv=tuple(argv), deep=False)


def _outputs(command: str, rng: random.Random) -> list[str]:
    if command == "compile":
        if rng.random() < 0.2:
            return ["--target", "onnx", "-o", "{out}/model.onnx"]
        return ["-o", "{out}/model.py"] + ([rng.choice(["-O1", "-O2"])] if rng.random() < 0.3 else [])
    if command == "render":
        return ["-o", "{out}/model." + rng.choice(["dot", "dot", "svg"])]
    if command == "summary" and rng.random() < 0.3:
        return ["--format", "json"]
    return []
