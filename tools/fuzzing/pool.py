"""Long-lived worker processes that run cases one after another, with a time and a memory limit.

The parent imports dslc and torch once and forks the workers, so a case costs its own work only.
Each worker is its own process group (dslc check may fork a helper) with RLIMIT_AS set to its size
at start plus the memory limit, so a runaway allocation raises MemoryError (or kills the worker)
instead of taking the machine down.

The parent is the watchdog. A case over the time limit is a `hang`: over it in CPU seconds of its
worker in one phase (so that a machine busy with other work does not turn slow cases into hangs;
each phase, such as load or ONNX export, is one thing a user asks of dslc, and the worker marks
where each starts in shared memory), or over WALL times it in wall-clock seconds for the whole case
(a case that sleeps or blocks). The parent then asks faulthandler in
the worker (SIGUSR1) for five samples of the stack it is stuck in, whose innermost common dslc
frame is the hang's, and kills the worker's group. A worker that dies by a signal is a `memory` failure (SIGKILL: the
kernel's out-of-memory killer) or an `internal` crash (SIGSEGV from a C stack overflow, ...), with
the stack faulthandler wrote. A worker is replaced after any of these, and after `recycle` cases
(generated modules pile up in it).
"""
from __future__ import annotations

import faulthandler
import multiprocessing
import os
import resource
import shutil
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass
from multiprocessing.connection import wait

from .cases import PHASES, Case, Outcome
from .target import DSLC_FRAMES, WALL, api_target, classify, innermost, lower, run_cli, steady_frame, text_frames

GRACE = 0.1          # seconds between asking for a sample of the stack and reading it
POLL = 0.25          # seconds between looks at the busy workers' CPU time
CLI_STARTUP = 5.0    # a command line run may import torch before it starts the work
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Limits:
    seconds: float = 10.0
    memory: int = 2 << 30

    def over(self, case: Case, cpu: float, wall: float) -> bool:
        """Whether a running case is over the limit (`cpu`: of its running phase; `wall`: of the case).
        A cli case limits its subprocess itself (and may run twice, the second time with --debug):
        the parent only guards against a stuck worker."""
        if case.mode == "cli":
            return wall > 2 * WALL * (self.seconds + CLI_STARTUP) + 1
        return cpu > self.seconds or wall > WALL * self.seconds


def vm_size() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def set_memory_limit(extra: int) -> None:
    """Allow `extra` bytes of address space beyond what the process already maps."""
    lower(resource.RLIMIT_AS, vm_size() + extra)


# ---------------------------------------------------------------- the worker process


def write_files(root: str, files: dict) -> list[str]:
    written = []
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        written.append(path)
    return written


def remove_files(paths: list[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def die_with_parent() -> None:
    """The worker is in its own process group: make the kernel kill it when the fuzzer dies,
    however it dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _worker(conn, target, root: str, limits: Limits, prefixes: tuple, dump_path: str, clock) -> None:
    os.setpgid(0, 0)
    die_with_parent()
    warnings.simplefilter("ignore")   # torch's advice about odd but legal arguments is not a finding
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    set_memory_limit(limits.memory)
    out = tempfile.mkdtemp(prefix="out-", dir=os.path.dirname(dump_path))
    with open(dump_path, "w") as dump:
        faulthandler.enable(file=dump)
        faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
        while True:
            case = conn.recv()
            if case is None:
                os._exit(0)
            os.ftruncate(dump.fileno(), 0)
            os.lseek(dump.fileno(), 0, os.SEEK_SET)
            try:
                outcome = _run(case, target, root, limits, prefixes, out, lambda phase: _mark(clock, phase))
            except Exception as e:  # noqa: BLE001 - the fuzzer's own fault: reported as such, not dslc's
                outcome = Outcome("internal", type(e).__name__, f"in the fuzzer: {e}"[:300], phase="fuzzer")
            conn.send(outcome)


def _mark(clock, phase: str) -> None:
    """Tell the parent that `phase` starts now: its index, and this process's CPU time."""
    clock[1] = PHASES.index(phase)
    clock[0] = time.process_time()


def _run(case: Case, target, root: str, limits: Limits, prefixes: tuple, out: str, mark) -> Outcome:
    written = write_files(root, case.files)
    try:
        if case.mode == "cli":
            return run_cli(case, root, out, limits.seconds + CLI_STARTUP, limits.memory)
        return classify(lambda progress: target(case, root, progress), prefixes, mark)
    finally:
        remove_files(written)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out, exist_ok=True)


# ---------------------------------------------------------------- the parent's side


class Worker:
    def __init__(self, slot: int, pool: "Pool"):
        self.slot = slot
        self.dump_path = os.path.join(pool.scratch, f"stack-{slot}.txt")
        parent, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("fork")
        self.clock = ctx.RawArray("d", 2)   # the running phase's start (worker CPU seconds) and index
        self.process = ctx.Process(target=_worker, daemon=True,
                                   args=(child, pool.target, pool.roots[slot], pool.limits, pool.prefixes,
                                         self.dump_path, self.clock))
        self.process.start()
        child.close()
        self.conn = parent
        self.case: Case | None = None
        self.started = 0.0
        self.done = 0

    def send(self, case: Case) -> None:
        self.case, self.started, self.cpu_start = case, time.monotonic(), self.cpu()
        self.conn.send(case)

    def cpu(self) -> float:
        """CPU seconds the worker has used (user + system)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICK

    def phase_cpu(self) -> float:
        """CPU seconds of the running phase (of the case, until the worker marks its first phase)."""
        return self.cpu() - max(self.cpu_start, self.clock[0])

    def phase(self) -> str:
        return PHASES[int(self.clock[1])]

    def over(self, limits: Limits) -> bool:
        return limits.over(self.case, self.phase_cpu(), time.monotonic() - self.started)

    def ask_stacks(self, times: int = 5) -> list[str]:
        """Samples of the stack the worker is in (faulthandler appends one to the file on SIGUSR1)."""
        out = []
        for _ in range(times):
            before = os.path.getsize(self.dump_path)
            try:
                os.kill(self.process.pid, signal.SIGUSR1)
            except OSError:
                break
            time.sleep(GRACE)
            out.append(self.stack(before))
        return out

    def stack(self, since: int = 0) -> str:
        """What faulthandler wrote, from byte `since` on."""
        try:
            with open(self.dump_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        for kill in (lambda: os.killpg(self.process.pid, signal.SIGKILL),
                     lambda: os.kill(self.process.pid, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.kill()
        self.conn.close()


class Pool:
    """Run cases on `workers` forked workers; `target(case, root, progress)` runs an api case in the
    worker whose mirror is `roots[slot]`."""

    def __init__(self, roots: list[str], target=api_target, limits: Limits = Limits(),
                 prefixes: tuple = DSLC_FRAMES, recycle: int = 100):
        self.roots, self.target, self.limits, self.prefixes, self.recycle = roots, target, limits, prefixes, recycle
        self.scratch = tempfile.mkdtemp(prefix="dslc-fuzz-pool-")
        self.workers = [Worker(slot, self) for slot in range(len(roots))]

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(now=exc_type is not None)

    def close(self, now: bool = False) -> None:
        """Stop the workers (at once, killing what they run, when `now`) and remove the scratch folder."""
        for w in self.workers:
            if now:
                w.kill()
            else:
                w.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self, cases):
        """Yield (case, outcome) as cases finish (not in order)."""
        pending = iter(cases)
        busy: list[Worker] = []
        idle = list(self.workers)
        while True:
            while idle:
                case = next(pending, None)
                if case is None:
                    break
                w = idle.pop()
                w.send(case)
                busy.append(w)
            if not busy:
                return
            for w, outcome in self._finished(busy):
                busy.remove(w)
                yield w.case, outcome
                idle.append(self._after(w, outcome))

    def run_ordered(self, cases: list[Case]) -> list[Outcome]:
        """Outcomes in the order of `cases` (which must have distinct indexes)."""
        got = {c.index: o for c, o in self.run(cases)}
        return [got[c.index] for c in cases]

    def _finished(self, busy: list[Worker]):
        ready = wait([w.conn for w in busy], timeout=POLL)
        done = []
        for w in busy:
            if w.conn in ready:
                done.append((w, self._receive(w)))
            elif w.over(self.limits):
                done.append((w, self._hang(w)))
        return done

    def _receive(self, w: Worker) -> Outcome:
        try:
            return w.conn.recv()
        except (EOFError, OSError):
            return self._died(w)

    def _died(self, w: Worker) -> Outcome:
        w.process.join(5)
        code = w.process.exitcode
        frame, where = innermost(text_frames(w.stack(), newest_first=True), self.prefixes)
        seconds = time.monotonic() - w.started
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            cls = "memory" if -code == signal.SIGKILL else "internal"
            return Outcome(cls, name, f"the worker died by {name}", frame, where, seconds=seconds)
        return Outcome("internal", f"exit {code}", "the worker exited during a case", frame, where, seconds=seconds)

    def _hang(self, w: Worker) -> Outcome:
        cpu, phase = w.phase_cpu(), w.phase()
        stacks = w.ask_stacks()
        w.kill()
        frame, where = steady_frame([text_frames(s, newest_first=True) for s in stacks], self.prefixes)
        wall = time.monotonic() - w.started
        return Outcome("hang", "Timeout", f"over {self.limits.seconds:g} s: {cpu:.1f} s of CPU in {phase}, "
                       f"{wall:.1f} s in all", frame, where, phase if w.case.mode == "api" else "cli", wall)

    def _after(self, w: Worker, outcome: Outcome) -> Worker:
        """The worker for the next case: the same one, or a fresh one in its slot."""
        w.done += 1
        if w.process.is_alive() and outcome.cls not in ("hang", "memory") and outcome.etype[:3] != "SIG" \
                and w.done < self.recycle:
            return w
        if w.process.is_alive():
            w.stop()
        else:
            w.conn.close()
        fresh = Worker(w.slot, self)
        self.workers[self.workers.index(w)] = fresh
        return fresh
