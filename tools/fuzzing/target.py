"""What a worker does with a case, and how it classifies what happened.

In-process (`api`): `dslc.load`, then the PyTorch source of every buildable model (which must be
valid Python), and for a deep case the diagram, a summary, the source at -O1 and -O2, `build`, a
forward pass on random inputs and `onnx` (these two only where the fuzzer's sizes meet the model's
run-time requirements); a deep case that does not load draws the diagram that
`dslc render` draws of a spec with errors.
A DslcError is `clean` (its diagnostics must render), MemoryError or an allocator failure is
`memory`, any other exception is `internal`. Through the command line (`cli`): exit 0 is `ok`, 1 or
2 without a traceback `clean`; exit 3, any other status or a traceback is `internal`.
"""
from __future__ import annotations

import collections
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback

import dslc
from dslc.diagnostics import DslcError
from dslc.ir.dims import Var, unmet

from .cases import Case, Outcome
from .seeds import ROOT

DSLC_FRAMES = (os.path.dirname(os.path.abspath(dslc.__file__)) + os.sep, "<dslc ")
DSLC_COMMAND = os.path.join(os.path.dirname(sys.executable), "dslc")
OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "bad_alloc", "out of memory", "cannot allocate memory")
SIZES = {"B": 2, "T": 5, "S": 3}       # run-time sizes of a forward pass; any other one is 4
MAX_PARAMS, MAX_MACS = 2_000_000, 200_000_000   # bigger models test torch's speed, not dslc
MAX_ELEMENTS = 10_000_000             # nor does a tensor of more elements (an input [B, 2**32] is 32 GiB)
DEEP_MODELS = 3                       # models of a deep case that are built and exported
WALL = 10.0                           # a case may take this many times its CPU limit in wall-clock time
CLI_BASE_MEMORY = 1 << 30             # a fresh interpreter with torch maps about 0.6 GB before any work


class Progress:
    """The phase a case is in: for the report, and for the watchdog, which `mark(phase)` tells as
    each phase starts (the time limit is per phase: each is one thing a user asks dslc to do)."""

    def __init__(self, mark=None):
        self._mark = mark
        self.phase = "load"

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase = name
        if self._mark is not None:
            self._mark(name)


# ---------------------------------------------------------------- frames


def short(path: str) -> str:
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def innermost(frames: list[tuple[str, int, str]], prefixes: tuple) -> tuple[str, str]:
    """(file:function, file:line) of the innermost frame whose file starts with one of `prefixes`."""
    for filename, line, name in reversed(frames):
        if filename.startswith(prefixes):
            return f"{short(filename)}:{name}", f"{short(filename)}:{line}"
    return "", ""


def steady_frame(samples: list[list[tuple[str, int, str]]], prefixes: tuple) -> tuple[str, str]:
    """For a hang, the innermost frame that every sample of its stack (outermost first) shares: the
    loop it is stuck in, not whichever helper that loop happened to be calling."""
    samples = [s for s in samples if s]
    if not samples:
        return "", ""
    common = []
    for level in zip(*samples):
        if len({(f, name) for f, _, name in level}) != 1:
            break
        common.append(level[-1])
    for frames in [common, *reversed(samples)]:   # else the latest sample that is in dslc at all
        found = innermost(frames, prefixes)
        if found[0]:
            return found
    return "", ""


def recursion_frame(frames: list[tuple[str, int, str]], prefixes: tuple) -> tuple[str, str]:
    """For a RecursionError, the function that recurses (the commonest frame), not wherever the
    limit happened to strike."""
    mine = [(f, line, name) for f, line, name in frames if f.startswith(prefixes)]
    if not mine:
        return "", ""
    counts = collections.Counter((f, name) for f, _, name in mine)
    top = max(counts.values())
    f, line, name = next(x for x in reversed(mine) if counts[(x[0], x[2])] == top)
    return f"{short(f)}:{name}", f"{short(f)}:{line}"


def culprit(frames: list[tuple[str, int, str]], prefixes: tuple, recursion: bool) -> tuple[str, str]:
    return recursion_frame(frames, prefixes) if recursion else innermost(frames, prefixes)


def exception_frames(error: BaseException) -> list[tuple[str, int, str]]:
    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(error.__traceback__)]


TRACEBACK_LINE = re.compile(r'File "([^"]+)", line (\d+),? in (\S+)')


def text_frames(text: str, newest_first: bool = False) -> list[tuple[str, int, str]]:
    """Frames of a printed traceback (or of a faulthandler dump, which lists the newest first)."""
    frames = [(f, int(n), name) for f, n, name in TRACEBACK_LINE.findall(text)]
    return frames[::-1] if newest_first else frames


# ---------------------------------------------------------------- in-process


def classify(call, prefixes: tuple = DSLC_FRAMES, mark=None) -> Outcome:
    """Run call(progress) and classify its end."""
    progress = Progress(mark)
    start = time.monotonic()
    try:
        call(progress)
    except DslcError as e:
        return _clean(e, progress, prefixes, time.monotonic() - start)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - classifying every end is the point
        return failure(e, progress.phase, prefixes, time.monotonic() - start)
    return Outcome("ok", phase=progress.phase, seconds=time.monotonic() - start)


def _clean(e: DslcError, progress: Progress, prefixes: tuple, seconds: float) -> Outcome:
    try:
        text = e.render()
        codes = tuple(sorted(set(e.codes)))
    except BaseException as r:  # noqa: BLE001 - a diagnostic that cannot render is a bug
        return failure(r, "render", prefixes, seconds)
    return Outcome("clean", "DslcError", text.splitlines()[0][:300] if text else "", phase=progress.phase,
                   seconds=seconds, codes=codes)


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(s in str(e).lower() for s in OUT_OF_MEMORY)


# torch's checks of data values (not shapes or sizes), which no checker can decide before the
# values exist: BCE of values outside [0, 1], an embedding id or a class id out of range. The same
# model written by hand in PyTorch raises them on the same random inputs. (An index out of bounds
# of a dimension stays internal: the checker must decide it, or say why it cannot.)
VALUE_CHECKS = re.compile(r"should be between 0 and 1|index out of range in self|Target -?\d+ is out of bounds")


def is_value_check(e: BaseException, phase: str, frames: list) -> bool:
    """A torch value check raised by the generated model's forward (its innermost frame of ours is
    the generated file, not dslc), on the fuzzer's random inputs."""
    ours = [f for f in frames if f[0].startswith(DSLC_FRAMES)]
    return phase == "forward" and isinstance(e, (RuntimeError, IndexError, ValueError)) and bool(ours) \
        and ours[-1][0].startswith("<dslc ") and VALUE_CHECKS.search(str(e)) is not None


def failure(e: BaseException, phase: str, prefixes: tuple, seconds: float) -> Outcome:
    frames = exception_frames(e)
    frame, where = culprit(frames, prefixes, isinstance(e, RecursionError))
    cls = "memory" if is_out_of_memory(e) else "value" if is_value_check(e, phase, frames) else "internal"
    try:
        message = str(e)[:300]
    except BaseException:  # noqa: BLE001 - e.g. a huge int's str() refused
        message = "(unprintable)"
    return Outcome(cls, type(e).__name__, message, frame, where, phase, seconds)


def api_target(case: Case, root: str, progress: Progress) -> None:
    """Load the case, generate its PyTorch source; in a deep case also draw, optimize, build, run and
    export, or, when it does not load, draw what `dslc render` draws of a spec with errors."""
    path = os.path.join(root, case.main)
    try:
        prog = dslc.load(path)
    except DslcError:
        if case.deep:
            draw_partial(path, progress)
        raise
    if not prog.buildable:
        return
    progress.phase = "source"
    compile(prog.source(), "<generated>", "exec")   # generated code must at least be Python
    if case.deep:
        for name in prog.buildable[:DEEP_MODELS]:
            exercise(prog, name, progress)


def warm_up(root: str) -> Outcome:
    """Run a small deep case here, so the lazy imports (torch, onnx, the backends) happen once,
    before the workers fork, instead of in every worker."""
    import torch
    torch.set_num_threads(1)
    case = Case(-1, "warm-up", main="specs/lenet.dl", deep=True)
    return classify(lambda progress: api_target(case, root, progress))


def draw_partial(path: str, progress: Progress) -> None:
    """The diagram `dslc render` draws up to the first error, of each model the file seems to declare."""
    from dslc.api import partial_graph
    from dslc.backends.diagram import to_dot
    progress.phase = "render"
    with open(path, "rb") as f:
        names = re.findall(r"\bmodel\s+(\w+)", f.read().decode("utf-8", "replace"))
    for name in names[:DEEP_MODELS] or [None]:
        graph = partial_graph(path, name, {})
        if graph is not None:
            to_dot(graph, None, True)


def exercise(prog, name: str, progress: Progress) -> None:
    import torch

    from dslc.backends.summary import macs_value
    progress.phase = "render"
    prog.diagram(name)
    progress.phase = "summary"
    s = prog.summary(name)
    macs = macs_value(s.macs)
    shapes = list(s.inputs.values()) + [row.output_shape for row in s.layers]
    if s.total_params > MAX_PARAMS or (isinstance(macs, int) and macs > MAX_MACS) or \
            max(map(elements, shapes), default=0) > MAX_ELEMENTS:
        return
    progress.phase = "passes"
    for opt in (1, 2):
        compile(prog.source([name], opt=opt), "<generated>", "exec")
    progress.phase = "build"
    net = prog.build(name, seed=0).eval()
    graph = prog.graph(name)
    if unmet(graph.guards, lambda a: SIZES.get(a.name, 4) if isinstance(a, Var) else graph.atom_env.get(a)):
        return   # the spec needs longer inputs than the fuzzer feeds (`x[:, 9]` needs T > 9): forward refuses them
    progress.phase = "forward"
    from dslc.ir.nesting import nest, structure
    inputs = [random_input(graph.type_of(ref)) for _, ref in graph.inputs]
    with torch.no_grad():   # a tuple input (`hidden.0`, `hidden.1`) is one argument, a tuple
        net(*nest(structure([n for n, _ in graph.inputs]), inputs))
    progress.phase = "onnx"
    prog.onnx(name, seed=0)


def elements(shapes: str) -> int:
    """Elements of the largest tensor in a summary's shape text ("[B, T * 64]", "[B, 4], [B]") at the
    forward pass's sizes; a dimension the text cannot give counts as huge."""
    largest = 0
    for shape in re.findall(r"\[([^\]]*)\]", shapes):
        count = 1
        for dim in filter(None, (d.strip() for d in shape.split(","))):
            expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(SIZES.get(m.group(), 4)), dim)
            if not re.fullmatch(r"[\d\s+\-*/%()]+", expr) or "**" in expr:
                return MAX_ELEMENTS + 1
            count *= int(eval(expr, {"__builtins__": {}}))  # noqa: S307 - digits and + - * / % only
        largest = max(largest, count)
    return largest


def random_input(t):
    import torch
    names = {n for d in t.shape for n in re.findall(r"[A-Za-z_]\w*", str(d))}
    shape = t.concrete(**{n: SIZES.get(n, 4) for n in names})
    if t.dtype.startswith("int"):   # ids: 0 is in range of any embedding (the model cannot know the data's)
        return torch.zeros(shape, dtype=getattr(torch, t.dtype))
    if t.dtype == "bool":
        return torch.rand(shape) > 0.5
    return torch.randn(shape, dtype=getattr(torch, t.dtype))


# ---------------------------------------------------------------- the command line


def run_cli(case: Case, root: str, out: str, seconds: float, memory: int) -> Outcome:
    argv = [a.replace("{file}", os.path.join(root, case.main)).replace("{out}", out) for a in case.argv]
    rc, stderr, took = spawn([DSLC_COMMAND, *argv], out, seconds, memory)
    if rc is None or rc == -signal.SIGXCPU:
        return Outcome("hang", "Timeout", f"over {seconds:g} s of CPU: dslc {case.argv[0]}", phase="cli",
                       seconds=took)
    if rc == 0:
        return Outcome("ok", phase="cli", seconds=took)
    if rc in (1, 2) and "Traceback" not in stderr:
        return Outcome("clean", "DslcError", phase="cli", seconds=took,
                       codes=tuple(sorted(set(re.findall(r"error\[(E\d{4})\]", stderr)))))
    return _cli_failure(rc, stderr, took, [DSLC_COMMAND, "--debug", *argv], out, seconds, memory)


def _cli_failure(rc: int, stderr: str, took: float, debug_argv: list, out: str, seconds: float,
                 memory: int) -> Outcome:
    found = re.search(r"internal error, please report: (\w+): (.*?)(?: \(rerun with --debug|$)", stderr, re.M)
    etype = found.group(1) if found else (signal.Signals(-rc).name if rc < 0 else f"exit {rc}")
    message = found.group(2)[:300] if found else stderr.strip()[-300:]
    cls = "memory" if "MemoryError" in stderr or rc == -signal.SIGKILL else "internal"
    trace = stderr if "Traceback" in stderr else spawn(debug_argv, out, seconds, memory)[1]
    frame, where = culprit(text_frames(trace), DSLC_FRAMES, etype == "RecursionError")
    return Outcome(cls, etype, message, frame, where, "cli", took)


def lower(which: int, soft: int) -> None:
    """Set a soft resource limit, within the hard one."""
    hard = resource.getrlimit(which)[1]
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def spawn(argv: list, cwd: str, seconds: float, memory: int) -> tuple:
    """(exit status or None on timeout, stderr, seconds) of a command in its own process group, with
    the memory limit and `seconds` of CPU (SIGXCPU); WALL times that in wall-clock time."""
    def limit():
        lower(resource.RLIMIT_AS, memory + CLI_BASE_MEMORY)
        lower(resource.RLIMIT_CPU, math.ceil(seconds))
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True, preexec_fn=limit, env=env) as p:
        try:
            _, err = p.communicate(timeout=WALL * seconds)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return None, "", time.monotonic() - start
    return p.returncode, err.decode("utf-8", "replace"), time.monotonic() - start
