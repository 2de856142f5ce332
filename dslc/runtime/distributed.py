"""Data-parallel training: torchrun launches the processes, torch.distributed connects them.

`dslc train --nproc-per-node N` (or a plan's `devices = N`) does not start processes itself: it
hands the command to torch's elastic launcher (`torch.distributed.run`, what `torchrun` is), with
`-m dslc.train` as each worker's program, so `torchrun ... -m dslc.train FILE` does the same. A
worker knows it is one from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, ...).

`World` is what a trainer asks of the other processes: the sums of numbers, whether any of them
was asked to stop, the run folder rank 0 claimed. One process is a world of one, whose answers
need no communication, so the trainer has a single code path.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import tempfile
from dataclasses import dataclass

import torch

from ..diagnostics import Diagnostic, DslcError
from .safety import Interrupted

# a peer that stops answering (a hung node) fails the collectives after this long; a peer that
# dies closes its sockets, which the others notice at once
TIMEOUT_S = float(os.environ.get("DSLC_DIST_TIMEOUT", "600"))
RESULT_FILE = "DSLC_RESULT_FILE"   # where rank 0 writes result.json's content for the launcher
MESSAGES = "DSLC_MESSAGES"         # the folder where the processes leave their error messages for the launcher


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "World":
        """The world torchrun started this process in (one process when it did not)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, device: torch.device) -> torch.device:
        """Each process's own GPU (its local rank) when training on CUDA."""
        if self.size > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group: gloo on the CPU, nccl on GPUs (one process trains without one)."""
        if self.size <= 1 or torch.distributed.is_initialized():
            return
        self.join(device)

    def join(self, device: torch.device) -> None:
        """Join the process group whatever its size (bench/gpu.py measures DDP in a world of one too)."""
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(self.backend, timeout=datetime.timedelta(seconds=TIMEOUT_S),
                                             **({"device_id": device} if device.type == "cuda" else {}))

    def stop(self) -> None:
        if self.size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def sums(self, values: list[float], device) -> list[float]:
        """Each number summed over the processes (float64, so the sums do not depend on the order)."""
        if self.size <= 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device) -> bool:
        """Whether any process says yes: all of them then act on it at the same batch."""
        return bool(self.sums([float(flag)], device)[0]) if self.size > 1 else flag

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            torch.distributed.barrier()

    def share(self, value):
        """Rank 0's `value` (any picklable object), in every process."""
        if self.size <= 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every process's `value`, in rank order."""
        if self.size <= 1:
            return [value]
        out = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out


def data_parallel(module: torch.nn.Module, device: torch.device, ignored: list[str] | tuple = (),
                  find_unused: bool = False) -> torch.nn.Module:
    """`module` under DistributedDataParallel, which averages the gradients of its parameters over the
    processes, except those named in `ignored`. Buffers are never synced at each forward (DDP's
    default): the trainer sends rank 0's after each epoch instead."""
    from torch.nn.parallel import DistributedDataParallel
    ignored = list(ignored) + [n for n, _ in module.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def in_worker() -> bool:
    """Whether torchrun started this process (then it trains; it never launches again)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Launch:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def wanted(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1


def torchrun_args(launch: Launch, worker_args: list[str]) -> list[str]:
    """torchrun's command line for `worker_args` (those of `dslc train`, less the launch options).
    One machine uses a standalone rendezvous (a free port on localhost); several meet at
    `--rdzv-endpoint` with the c10d rendezvous, every node running the same command."""
    args = [f"--nproc-per-node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}"]
    if launch.nnodes > 1 or launch.rdzv_endpoint:
        if not launch.rdzv_endpoint:
            raise DslcError(Diagnostic("E0609", f"training on {launch.nnodes} machines needs --rdzv-endpoint "
                                       "HOST:PORT: where they meet", help="give every node the same "
                                       "--rdzv-endpoint, the address of the first node and a free port"))
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={launch.rdzv_endpoint}", f"--node-rank={launch.node_rank}",
                 "--rdzv-id=dslc"]
    else:
        args += ["--standalone"]
    return args + ["--max-restarts=0", "-m", "dslc.train"] + worker_args


def launch(launch: Launch, worker_args: list[str], out=print, warn=None) -> dict:
    """Run `dslc train` in `launch.nproc_per_node` processes under torchrun and wait for them; the
    result rank 0 reports. A process that fails (an error, killed) stops them all: DslcError E0609,
    after the processes' own error messages, each different one once (`tell`), to `warn` (stderr)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    args = get_args_parser().parse_args(torchrun_args(launch, worker_args))
    with tempfile.TemporaryDirectory(prefix="dslc-launch-") as folder:
        result_file, messages = os.path.join(folder, "result.json"), os.path.join(folder, "messages")
        os.mkdir(messages)
        try:
            with _environment({RESULT_FILE: result_file, MESSAGES: messages}):
                run(args)
        except (ChildFailedError, SignalException) as e:
            _interrupted(_read(result_file))   # Ctrl-C or SIGTERM: the processes checkpointed and stopped
            if isinstance(e, SignalException):
                raise KeyboardInterrupt from None
            raise DslcError(Diagnostic("E0609", _failure(e), help="a run stopped this way continues with "
                                       "--resume from its last checkpoint")) from None
        finally:
            for text in gathered(messages):
                (warn or _stderr)(text)
        return _read(result_file)


@contextlib.contextmanager
def _environment(values: dict):
    """The environment variables `values` while the block runs (the workers inherit them), then as before."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def tell(text: str) -> None:
    """A process's error message (a diagnostic, an internal error). Every process of a run that fails
    alike would print the same one: under dslc's launcher the message is left in its folder instead,
    and the launcher prints each different one once when the run ends (`gathered`). Under a bare
    torchrun, it is printed, prefixed with the rank by the processes other than rank 0."""
    rank = int(os.environ.get("RANK", "0"))
    folder = os.environ.get(MESSAGES)
    if folder and os.path.isdir(folder):
        try:
            with open(os.path.join(folder, f"rank-{rank}.txt"), "a", encoding="utf-8") as f:
                f.write(text + "\0")
            return
        except OSError:
            pass   # then printed, as under a bare torchrun
    _stderr(_by_ranks(text, [rank]))


def gathered(folder: str) -> list[str]:
    """The messages the processes left in `folder`, each different one once, in rank order: as it
    is when rank 0 has it (what torchrun and Lightning print, rank 0's), else prefixed with the
    ranks that have it (`rank 1: ...`), so that a failure of one process still reaches the user."""
    ranks: dict = {}   # message -> the ranks that left it
    files = {int(f[5:-4]): f for f in os.listdir(folder) if f.startswith("rank-") and f.endswith(".txt")}
    for rank in sorted(files):
        with open(os.path.join(folder, files[rank]), encoding="utf-8", errors="replace") as f:
            for text in f.read().split("\0")[:-1]:   # whole messages: a process killed mid-write leaves a part
                if text and rank not in ranks.setdefault(text, []):
                    ranks[text].append(rank)
    return [_by_ranks(text, rs) for text, rs in ranks.items()]


def _by_ranks(text: str, ranks: list) -> str:
    if 0 in ranks:
        return text
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks)) + ": " + text


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _interrupted(result: dict) -> None:
    """Raise rank 0's Interrupted (its checkpoint and signal), when that is how the run ended."""
    if "interrupted" in result:
        raise Interrupted(result["interrupted"], int(result.get("signal", 2)))


def _failure(e) -> str:
    """Which processes failed and how: 'rank 1 was killed by SIGKILL'. torchrun ends the others with
    SIGTERM once one fails: those are named only when no process failed otherwise. A process killed
    by another signal is the cause where there is one: the others then exit with an error of their own
    (rank 0 lost contact with it), whichever torchrun saw first."""
    import signal
    failures = sorted(e.failures.items())
    causes = [(r, f) for r, f in failures if f.exitcode != -signal.SIGTERM] or failures
    causes = [(r, f) for r, f in causes if f.exitcode < 0] or causes
    parts = []
    for rank, failure in causes:
        code = failure.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        parts.append(f"rank {rank} {how}")
    return "data-parallel training stopped: " + ", ".join(parts) + \
        " (torchrun stopped the other processes; the messages above say more)"


def lost_contact(e: RuntimeError) -> bool:
    """Whether a RuntimeError is a collective's failure: gloo and NCCL raise plain RuntimeErrors when a
    peer's connection drops (`Connection reset by peer`), not torch.distributed.DistError."""
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or any(
        w in text for w in ("gloo/transport", "Connection reset", "Connection closed", "NCCL", "Socket Timeout"))


def report_result(result: dict) -> None:
    """Rank 0 hands its result to the launcher (when one started it)."""
    path = os.environ.get(RESULT_FILE)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, default=str)


def lost_peer(e: Exception) -> DslcError:
    """A collective that failed because another process died or hung."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    rank = os.environ.get("RANK", "?")
    return DslcError(Diagnostic("E0609", f"rank {rank} lost the other processes of the run: {first}",
                                help="another process stopped (its own message says why); continue with --resume"))


def quiet(*_args, **_kw) -> None:
    """What the processes other than rank 0 print: nothing (their errors still reach the user: `tell`)."""


__all__ = ["Launch", "World", "data_parallel", "gathered", "in_worker", "launch", "lost_peer", "quiet",
           "report_result", "tell", "torchrun_args"]
