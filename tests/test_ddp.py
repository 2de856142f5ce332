"""Data-parallel training (`dslc train --nproc-per-node N`, torchrun, DDP, gloo on the CPU).

The processes' runs are checked against a hand-written PyTorch loop (torch's own Linear, ReLU,
cross_entropy and SGD, one process, batch 64) over the same global order of examples: DDP with
2 × 32 must end at its weights. The sharding itself is checked against one process's batches."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from support import ROOT

from dslc.api import load, train
from dslc.diagnostics import DslcError
from dslc.frontend.fmt import statements
from dslc.runtime import data as data_mod
from dslc.runtime import distributed as dist
from dslc.runtime.trainer import Options, _merged, worker_args

# specs/mlp.dl's MLP with its layers named, so that a phase can freeze `fc1` (an unnamed chain is an
# nn.Sequential whose layers are `1`, `3`, ..., which a freeze path cannot name)
NET = """model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(32) as fc1
    ReLU()
    Linear(32) as fc2
    ReLU()
    Linear(10) as fc3
}
"""

PLAN = NET.replace("{", "{{").replace("}", "}}") + """
train small {{
    model      = Net()
    data       = digits(val=0.15, test=0.15, limit=640)
    loss       = cross_entropy(out, batch.y)
    optimizer  = SGD(lr=0.1)
    epochs     = EPOCHS
    batch_size = 32
    metrics    = [accuracy]
    checkpoint(every=1, keep=2)
    seed       = 0
PHASES}}
"""
# the first layer frozen for an epoch, then trained: DDP's wrappers are rebuilt for each phase
PHASES = """    phase head {
        freeze model.fc1
        epochs = 1
    }
    phase all {
        unfreeze model.fc1
        epochs = 2
    }
"""
DATA = {"val": 0.15, "test": 0.15, "limit": 640}


def write_plan(tmp_path, epochs: int, phases: bool = False) -> str:
    path = tmp_path / "small.dl"
    path.write_text(PLAN.format(root=ROOT).replace("EPOCHS", str(epochs)).replace("PHASES", PHASES if phases else ""))
    return str(path)


def launch(args: list[str], cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "dslc", "train", *args, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ the hand-written reference

def reference_weights(batch_sizes: list[int], frozen_epochs: int = 0) -> list[torch.Tensor]:
    """The MLP trained by torch alone: epoch e takes batches of batch_sizes[e - 1] in the run's order;
    the first layer is frozen for the first `frozen_epochs` (plain SGD keeps no state to rebuild)."""
    start = [t.detach().clone() for t in _net().state_dict().values()]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for p, t in zip(net.parameters(), start):
            p.copy_(t)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    split = data_mod.load("digits", dict(DATA)).train
    for epoch, size in enumerate(batch_sizes, 1):
        net[1].requires_grad_(epoch > frozen_epochs)
        for batch in data_mod.batches(split, size, shuffle=True, seed=0, epoch=epoch):
            sgd.zero_grad()
            F.cross_entropy(net(batch["x"]), batch["y"]).backward()
            sgd.step()
    return [p.detach() for p in net.parameters()]


def run_weights(run, tag: str) -> list[torch.Tensor]:
    """A checkpoint's weights in the model's order (the file keeps them sorted by name)."""
    state = load_file(os.path.join(run, "checkpoints", tag + ".safetensors"))
    return [state[k] for k in _net().state_dict()]


def _net() -> torch.nn.Module:
    """NET built with seed 0, as the runs build it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.dl")
        with open(path, "w") as f:
            f.write(NET)
        return load(path).build("Net", seed=0)


def assert_close(got: list, want: list, tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert (g - w).abs().max().item() <= tol


# ------------------------------------------------------------------ sharding (no processes)

def test_shards_of_two_processes_are_the_batches_of_one():
    torch.manual_seed(0)
    split = {"x": torch.randn(203, 1, 4, 4), "y": torch.arange(203)}
    augment = [("random_flip", {"p": 0.5, "dim": 3}), ("gaussian_noise", {"std": 0.1})]
    for aug in (None, augment):
        one = list(data_mod.batches(split, 64, shuffle=True, seed=3, epoch=2, augment=aug))
        ranks = [list(data_mod.batches(split, 32, shuffle=True, seed=3, epoch=2, augment=aug, rank=r, world=2))
                 for r in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == len(one) == data_mod.steps_per_epoch(split, 32, 2)
        for whole, a, b in zip(one, *ranks):
            for f in ("x", "y"):
                assert torch.equal(torch.cat([a[f], b[f]]), whole[f])
    # 203 = 3 · 64 + 11: the last batch's 11 examples go 6 and 5
    assert [len(b["y"]) for b in ranks[1]] == [32, 32, 32, 5]
    # a last batch too small to give each process an example is left out
    assert data_mod.steps_per_epoch({"y": torch.arange(129)}, 32, 4) == 1
    assert len(list(data_mod.batches({"y": torch.arange(129)}, 32, shuffle=False, seed=0, epoch=1, world=4))) == 1


def test_streams_split_their_columns():
    stream = data_mod.Stream(torch.arange(1000), context=5)
    one = list(stream.batches(8))
    ranks = [list(stream.batches(4, r, 2)) for r in range(2)]
    assert len(one) == len(ranks[0]) == data_mod.steps_per_epoch(stream, 4, 2)
    for whole, a, b in zip(one, *ranks):
        assert torch.equal(torch.cat([a["x"], b["x"]]), whole["x"])
        assert torch.equal(torch.cat([a["y"], b["y"]]), whole["y"])


def test_training_metrics_of_processes_add_up():
    a = {"confusion": [[None, [[2, 1], [0, 3]]]], "top5": None, "nll": 1.5, "count": 6, "sq": None, "abs": None,
         "binary": False}
    b = dict(a, confusion=[[None, [[1, 0], [1, 2]]]], nll=0.5, count=4)
    assert _merged([a, b]) == dict(a, confusion=[[None, [[3, 1], [1, 5]]]], nll=2.0, count=10)


# ------------------------------------------------------------------ launching

def test_torchrun_command_lines():
    args = dist.torchrun_args(dist.Launch(2), ["f.dl", "--plan", "p"])
    assert args == ["--nproc-per-node=2", "--nnodes=1", "--standalone", "--max-restarts=0", "-m", "dslc.train",
                    "f.dl", "--plan", "p"]
    args = dist.torchrun_args(dist.Launch(4, 2, 1, "node0:29500"), ["f.dl"])
    assert args[:6] == ["--nproc-per-node=4", "--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500",
                        "--node-rank=1", "--rdzv-id=dslc"]
    with pytest.raises(DslcError) as e:
        dist.torchrun_args(dist.Launch(1, 2), ["f.dl"])
    assert e.value.codes == ["E0609"]
    # torchrun parses what dslc gives it
    from torch.distributed.run import get_args_parser
    parsed = get_args_parser().parse_args(dist.torchrun_args(dist.Launch(2), ["f.dl"]))
    assert parsed.nproc_per_node == "2" and parsed.module and parsed.training_script == "dslc.train"


def test_each_different_error_of_the_processes_is_printed_once(tmp_path, monkeypatch):
    """Every process that fails alike leaves the same message: the launcher prints it once, as rank 0
    has it; one that only other ranks hit still reaches the user, prefixed with their ranks. The
    processes are played here by the command line's own error path (`dslc train` of a missing file)
    under each rank's environment, and torchrun by a stand-in that then fails as torchrun does."""
    from click.testing import CliRunner
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from dslc.cli import main

    def torchrun(args):
        monkeypatch.setenv("WORLD_SIZE", "3")
        for rank, missing in ((0, "gone.dl"), (1, "gone.dl"), (2, "other.dl"), (1, "other.dl")):
            monkeypatch.setenv("RANK", str(rank))
            done = CliRunner().invoke(main, ["train", str(tmp_path / missing), "--no-progress"])
            assert done.exit_code == 1 and done.output == ""   # left for the launcher, not printed
        with open(os.path.join(os.environ[dist.MESSAGES], "rank-2.txt"), "a") as f:
            f.write("error[E06")   # killed while writing: a part of a message is not printed
        raise ChildFailedError("dslc.train", {0: ProcessFailure(0, 1, 1, "")})

    monkeypatch.setattr("torch.distributed.run.run", torchrun)
    monkeypatch.delenv("RANK", raising=False)
    warned = []
    with pytest.raises(DslcError) as e:
        dist.launch(dist.Launch(3), ["f.dl"], warn=warned.append)
    assert e.value.codes == ["E0609"] and "rank 0 exited with status 1" in e.value.render()
    assert len(warned) == 2, warned
    assert warned[0] == f"{tmp_path / 'gone.dl'}: error[E0901]: no such file: {tmp_path / 'gone.dl'}"
    assert warned[1] == f"ranks 1, 2: {tmp_path / 'other.dl'}: error[E0901]: no such file: {tmp_path / 'other.dl'}"
    assert dist.MESSAGES not in os.environ   # the launcher's environment is as it was
    # under a bare torchrun (no launcher of dslc's), each process prints its own, rank 1 with its rank
    monkeypatch.setenv("RANK", "1")
    done = CliRunner().invoke(main, ["train", str(tmp_path / "gone.dl"), "--no-progress"])
    assert done.exit_code == 1 and done.output.startswith(f"rank 1: {tmp_path / 'gone.dl'}: error[E0901]")


@pytest.mark.slow
def test_a_failure_of_every_process_is_reported_once(tmp_path):
    """Both processes refuse `sync_batchnorm` on the CPU alike: one message, then torchrun's E0609."""
    path = tmp_path / "heads.dl"
    path.write_text(HEADS.format(root=ROOT).replace("epochs = 1\n}\n\ntrain both",
                                                    "epochs = 1\n    sync_batchnorm = true\n}\n\ntrain both"))
    done = launch([str(path), "--plan", "one_head", "--nproc-per-node", "2", "--out", "run"], tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("error[E0302]: `sync_batchnorm` needs GPUs") == 1, done.stderr
    assert "rank 1:" not in done.stderr and "internal error" not in done.stderr
    assert done.stderr.index("error[E0302]") < done.stderr.index("error[E0609]: data-parallel training stopped")


def test_worker_command_line_says_what_the_options_say():
    options = Options(out="runs/x", resume=True, sets=("epochs=3", "optimizer.lr=0.5"), device="cpu", progress=False,
                      max_epochs=2, watch=False, nproc_per_node=2)
    assert worker_args("small", "a.dl", options) == [
        "a.dl", "--plan", "small", "--out", "runs/x", "--resume", "--set", "epochs=3", "--set", "optimizer.lr=0.5",
        "--device", "cpu", "--no-progress", "--max-epochs", "2", "--watch", "off"]


def test_plan_fields_of_data_parallel_training(tmp_path):
    base = ("import \"{root}/specs/mlp.dl\"\ntrain p {{\n model = MLP(hidden=8, classes=10)\n data = digits()\n"
            " loss = cross_entropy(out, batch.y)\n optimizer = SGD(lr=0.1)\n epochs = 1\n FIELD\n}}\n")

    def codes(field: str) -> list[str]:
        (tmp_path / "p.dl").write_text(base.format(root=ROOT).replace("FIELD", field))
        try:
            load(str(tmp_path / "p.dl")).plan("p")
        except DslcError as e:
            return e.codes
        return []
    assert codes("devices = 2") == [] and codes("strategy = ddp") == [] and codes("sync_batchnorm = true") == []
    assert codes("devices = 0") == ["E0302"]
    assert codes("strategy = fsdp") == [] and codes("strategy = zero3") == ["E0201"]   # not a strategy dslc knows
    assert codes("strategy = bf16") == ["E0301"]


# ------------------------------------------------------------------ real runs under torchrun (2 CPU processes)

@pytest.mark.slow
def test_two_processes_of_32_end_where_one_of_64_does(tmp_path):
    """Each process reads its batches with a DataLoader worker of its own (`workers = 1`): the pieces
    of the batches are still those of one process's order (test_a_killed_process... trains without)."""
    path = write_plan(tmp_path, 3, phases=True)
    done = launch([path, "--plan", "small", "--nproc-per-node", "2", "--out", "run", "--set", "workers=1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "data-parallel: 2 processes (gloo), batch_size 32 per process, an effective batch of 64" in done.stdout
    assert done.stdout.count("epoch 1/3") == 1          # rank 0 alone prints
    assert "    workers = 1" in statements((tmp_path / "run" / "plan.dl").read_text())
    assert_close(run_weights(tmp_path / "run", "epoch-0003"), reference_weights([64, 64, 64], frozen_epochs=1))
    # validation on all processes is one process's: the same weights give the same numbers
    single = train(path, "small", Options(out=str(tmp_path / "one"), sets=("batch_size=64",), progress=False),
                   out=lambda *_: None)
    import json
    two = json.loads((tmp_path / "run" / "result.json").read_text())
    assert abs(two["test"]["loss"] - single["test"]["loss"]) < 1e-5
    assert two["test"]["accuracy"] == single["test"]["accuracy"]
    assert sorted(os.listdir(tmp_path)) == ["one", "run", "small.dl"]   # rank 1 wrote nothing of its own


def _worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun started under `launcher_pid` (Linux's /proc)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"TORCHELASTIC_RUN_ID" in env and b"RANK" in env and (parent == launcher_pid or
                                                                   _ancestor(parent, launcher_pid)):
            out[int(env[b"RANK"])] = int(pid)
    return out


def _ancestor(pid: int, of: int) -> bool:
    for _ in range(4):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
        if pid == of:
            return True
    return False


@pytest.mark.slow
def test_a_killed_process_stops_the_run_and_resume_continues_exactly(tmp_path):
    path = write_plan(tmp_path, 400)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "dslc", "train", path, "--plan", "small", "--nproc-per-node", "2",
                             "--out", "run", "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "run/checkpoints/epoch-0002.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)   # no hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "error[E0609]: data-parallel training stopped: rank 1 was killed by SIGKILL (torchrun" in stderr
    assert stderr.count("error[E0609]: rank 0 lost the other processes of the run") == 1
    assert "internal error" not in stderr
    done = sorted(int(f[6:10]) for f in os.listdir(tmp_path / "run/checkpoints")
                  if f.startswith("epoch-") and f.endswith(".json") and "batch" not in f)
    k = done[-1]
    assert 2 <= k < 400
    # continued by one process (batch 32 now): exactly as torch trains k epochs of 64, then 2 of 32
    result = train(path, "small", Options(out=str(tmp_path / "run"), resume=True, sets=(f"epochs={k + 2}",),
                                          progress=False), out=lambda *_: None)
    assert result["epochs_run"] == k + 2
    assert_close(run_weights(tmp_path / "run", f"epoch-{k + 2:04d}"), reference_weights([64] * k + [32, 32]))


@pytest.mark.slow
def test_a_gan_trains_in_two_processes(tmp_path):
    gan = os.path.join(ROOT, "examples/gan/gan.dl")
    done = launch([gan, "--plan", "gan", "--nproc-per-node", "2", "--out", "run", "--set", "epochs=2",
                   "--set", "batch_size=32", "--set", "data.limit=256"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "an effective batch of 64" in done.stdout and "done: 2 epochs" in done.stdout
    state = load_file(str(tmp_path / "run/checkpoints/epoch-0002.safetensors"))
    start = load(gan).build("Generator", seed=0).state_dict()
    assert all(torch.isfinite(t).all() for t in state.values())
    assert any(not torch.equal(state["G." + k], v) for k, v in start.items())   # the generator trained


HEADS = """import "{root}/specs/mlp.dl"

model TwoHeads {{
    input x: [B, 1, 8, 8]
    h = x -> Flatten() -> Linear(16) -> BatchNorm1d() -> ReLU() -> Dropout(0.5)
    a = h -> Linear(10) as head_a
    b = h -> Linear(10) as head_b
    output a, b
}}

train one_head {{
    model = TwoHeads()
    data = digits(limit=100)
    loss = cross_entropy(out.a, batch.y)
    optimizer = SGD(lr=0.1)
    epochs = 1
}}

train both_heads {{
    model = TwoHeads()
    data = digits(limit=100)
    loss = cross_entropy(out.a, batch.y) + cross_entropy(out.b, batch.y)
    optimizer = SGD(lr=0.1)
    epochs = 1
}}
"""


def test_ddp_looks_for_unused_parameters_only_when_the_loss_leaves_some_out(tmp_path):
    """find_unused_parameters costs a graph walk per step: only a loss that ignores a head needs it.
    Finding out runs the step once without changing anything a run depends on."""
    from dslc.runtime.trainer import Trainer
    path = tmp_path / "heads.dl"
    path.write_text(HEADS.format(root=ROOT))
    found = {}
    for name in ("one_head", "both_heads"):
        trainer = Trainer(load(str(path)).plan(name), str(path), Options(), out=lambda *_: None)
        trainer.setup()
        trainer._start_phase(0)
        model = trainer.models["model"]
        model.train()
        before = ({k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state())
        found[name] = trainer.unused_parameters(trainer.steps[0])
        assert all(torch.equal(v, before[0][k]) for k, v in model.state_dict().items())   # BN statistics too
        assert torch.equal(torch.get_rng_state(), before[1]) and model.training
    assert found == {"one_head": True, "both_heads": False}


@pytest.mark.slow
def test_ctrl_c_checkpoints_every_process_at_the_same_batch(tmp_path):
    """Ctrl-C reaches the launcher and both processes (and torchrun passes it on once more): they stop
    together after a checkpoint, exit 130, and say so once."""
    path = write_plan(tmp_path, 400)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "dslc", "train", path, "--plan", "small", "--nproc-per-node", "2",
                             "--out", "run", "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "run").glob("checkpoints/epoch-*.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)   # what a terminal's Ctrl-C does
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr.count("interrupted: checkpoint written to run/checkpoints/epoch-") == 1, stderr
    assert "internal error" not in stderr and "E0609" not in stderr


def test_devices_in_the_plan_launches_torchrun(tmp_path, monkeypatch):
    """`devices = 2` means --nproc-per-node 2 (which overrides it); inside a worker nothing launches again."""
    path = write_plan(tmp_path, 1)
    text = open(path).read().replace("    seed       = 0\n", "    seed       = 0\n    devices    = 2\n")
    open(path, "w").write(text)
    launched = []
    monkeypatch.setattr(dist, "launch", lambda launch, args, out, warn: launched.append((launch, args)) or {"ok": 1})
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert train(path, "small", Options(out="r", progress=False)) == {"ok": 1}
    assert train(path, "small", Options(out="r", progress=False, nproc_per_node=3)) == {"ok": 1}
    assert [(x.nproc_per_node, args[:3]) for x, args in launched] == [(2, [path, "--plan", "small"]),
                                                                       (3, [path, "--plan", "small"])]


def test_sync_batchnorm_on_the_cpu_is_refused(tmp_path, monkeypatch):
    from dslc.runtime.trainer import Trainer
    path = tmp_path / "heads.dl"
    path.write_text(HEADS.format(root=ROOT).replace("epochs = 1\n}\n\ntrain both",
                                                    "epochs = 1\n    sync_batchnorm = true\n}\n\ntrain both"))
    monkeypatch.setattr(dist.World, "from_env", classmethod(lambda cls: cls(0, 2)))   # as rank 0 of two
    trainer = Trainer(load(str(path)).plan("one_head"), str(path), Options(device="cpu"), out=lambda *_: None)
    with pytest.raises(DslcError) as e:
        trainer.setup()
    assert e.value.codes == ["E0302"] and "SyncBatchNorm runs on CUDA only" in e.value.render()



# torch's hazard, made certain: rank 0's all_reduce finishes (rank 1 joins it late) while its main
# thread holds the GIL on its way out, so gloo's thread that frees the tensor waits for the GIL; the
# interpreter's teardown lets it have the GIL (a finalizer sleeps) only once it is finalizing
HAZARD = """
import os, sys, time, datetime, torch
import torch.distributed as dist
rank = int(sys.argv[1])
dist.init_process_group("gloo", store=dist.FileStore(sys.argv[2], 2), rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
if rank == 1:
    time.sleep(1)
    dist.all_reduce(torch.ones(4))
    time.sleep(1)
    os._exit(0)
sys.setswitchinterval(1000)   # the main thread keeps the GIL until it blocks
t = torch.ones(4)
dist.all_reduce(t, async_op=True)
class Slow:
    def __del__(self):
        time.sleep(1)
slow = Slow()
slow.cycle = slow   # collected by the teardown
del slow
end = time.monotonic() + 2.5
while time.monotonic() < end:
    pass
sys.exit(0)
"""
# dslc.train as torchrun starts it, with a hook on the interpreter's teardown; argv[1] is the
# command line (a failing one goes through the teardown)
LEAVES = """
import atexit, runpy, sys
atexit.register(lambda: print("teardown", flush=True))
sys.argv = ["dslc.train", sys.argv[1]]
runpy.run_module("dslc.train", run_name="__main__")
"""


@pytest.mark.slow
def test_a_process_of_a_run_leaves_without_the_teardown_that_aborts_under_gloo(tmp_path):
    """A 2-process FSDP run now and then ended in SIGABRT, "terminate called without an active
    exception": a gloo thread that frees a finished collective's tensor takes the GIL, and one that
    asks for it while the interpreter finalizes is ended where C++ cannot unwind. HAZARD makes the
    timing certain. A process of a run (`python -m dslc.train`, what torchrun starts) that ends
    well leaves without the teardown: its hooks never run. One that fails exits as before."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    (tmp_path / "hazard.py").write_text(HAZARD)
    run = [subprocess.Popen([sys.executable, "hazard.py", str(rank), "store"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    leaving = [subprocess.run([sys.executable, "-c", LEAVES, argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120) for argv in ("--help", "missing.dl")]
    assert leaving[0].returncode == 0 and "Usage: dslc train" in leaving[0].stdout
    assert "teardown" not in leaving[0].stdout
    assert leaving[1].returncode == 1 and "no such file: missing.dl" in leaving[1].stderr
    assert "teardown" in leaving[1].stdout
    code, err = run[0].wait(timeout=120), run[0].stderr.read()
    assert run[1].wait(timeout=120) == 0
    assert code == -signal.SIGABRT and "terminate called without an active exception" in err, (code, err)


def test_the_process_a_signal_killed_is_named_as_the_cause():
    """Rank 1 killed: rank 0 then fails on its own (it lost contact), and torchrun ends any other with
    SIGTERM. Whichever it saw first, the message names the killed one."""
    from types import SimpleNamespace as NS
    failures = {0: NS(exitcode=1), 1: NS(exitcode=-signal.SIGKILL), 2: NS(exitcode=-signal.SIGTERM)}
    text = dist._failure(NS(failures=failures))
    assert text.startswith("data-parallel training stopped: rank 1 was killed by SIGKILL (torchrun")
    # no signal but torchrun's: the processes that failed on their own
    text = dist._failure(NS(failures={0: NS(exitcode=-signal.SIGTERM), 1: NS(exitcode=3)}))
    assert text.startswith("data-parallel training stopped: rank 1 exited with status 3 (")
