"""Fully sharded training (`strategy = fsdp`: torch's FSDP2, `fully_shard`, gloo on the CPU).

The runs are checked against a hand-written PyTorch loop (torch's own Linear, ReLU, cross_entropy,
SGD with momentum and clip_grad_norm_, one process, whole batches) over the same order of examples:
2 processes × 32 must end at the weights, and the momentum, of 1 × 64. Checkpoints hold whole tensors
in one process's form, so a run moves between one process, DDP and FSDP in any direction."""
import json
import math
import pathlib
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from support import ROOT
from test_ddp import DATA, assert_close, launch

from dslc.api import load, train
from dslc.diagnostics import DslcError
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options

# an MLP with a second head, `spare`, that the loss leaves out: its weights get no gradient (FSDP
# then scatters none for them, and SGD keeps no momentum for them)
NET = """model Net {
    input x: [B, 1, 8, 8]
    h = x -> Flatten() -> Linear(32) as fc1 -> ReLU() -> Linear(32) as fc2 -> ReLU()
    a = h -> Linear(10) as fc3
    b = h -> Linear(10) as spare
    output a, b
}
"""
# 4 epochs: the first layer frozen for two, then all layers for two (a new optimizer, momentum from
# zero); the gradients of two batches added up before each step (FSDP scatters them at the second
# only), and clipped to norm 0.5 (DTensors under FSDP)
PLAN = NET + """
train small {
    model      = Net()
    data       = digits(val=0.15, test=0.15, limit=640)
    loss       = cross_entropy(out.a, batch.y)
    optimizer  = SGD(lr=0.1, momentum=0.9)
    clip_grad_norm = 0.5
    accumulate = 2
    epochs     = 4
    batch_size = 32
    checkpoint(every=1, keep=4)
    early_stopping(patience=10, restore_best=true)
    seed       = 0
    strategy   = fsdp
    phase head {
        freeze model.fc1
        epochs = 2
    }
    phase all {
        unfreeze model.fc1
        epochs = 2
    }
}
"""


def write_plan(tmp_path) -> str:
    path = tmp_path / "small.dl"
    path.write_text(PLAN)
    return str(path)


def start_weights(tmp_path) -> dict:
    """NET built with seed 0, as the runs build it."""
    (tmp_path / "net.dl").write_text(NET)
    return load(str(tmp_path / "net.dl")).build("Net", seed=0).state_dict()


class Twin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.spare = (torch.nn.Linear(i, o) for i, o in
                                                    [(64, 32), (32, 32), (32, 10), (32, 10)])

    def forward(self, x):
        h = F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))
        return self.fc3(h), self.spare(h)


def reference(start: dict, batch_sizes: list[int], bf16: bool = False) -> tuple[dict, list]:
    """The model trained by torch alone, epoch e in batches of batch_sizes[e - 1] of the run's order
    (under bfloat16 autocast with `bf16`): its weights and its optimizer's momentum buffers at the end."""
    net = Twin()
    net.load_state_dict(start)
    split = data_mod.load("digits", dict(DATA)).train
    for epoch, size in enumerate(batch_sizes, 1):
        net.fc1.requires_grad_(epoch > 2)
        if epoch in (1, 3):   # each phase starts with a new optimizer
            sgd = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
        batches = list(data_mod.batches(split, size, shuffle=True, seed=0, epoch=epoch))
        for b, batch in enumerate(batches, 1):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(batch["x"])[0], batch["y"])
            (loss / 2).backward()
            if b % 2 == 0 or b == len(batches):
                torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], 0.5)
                sgd.step()
                sgd.zero_grad(set_to_none=True)
    state = [sgd.state[p] for p in net.parameters() if p.requires_grad]
    return {k: v.detach() for k, v in net.state_dict().items()}, [s.get("momentum_buffer") for s in state]


def checkpoint_of(run, epoch: int) -> tuple[dict, list]:
    """A checkpoint's weights and its momentum buffers, in the optimizer's order (None for a parameter
    the optimizer keeps no state for)."""
    weights = load_file(str(run / "checkpoints" / f"epoch-{epoch:04d}.safetensors"))
    state = load_file(str(run / "checkpoints" / f"epoch-{epoch:04d}.state.safetensors"))
    return weights, [state.get(f"optim.train.{i}.momentum_buffer") for i in range(8)]


def assert_trained_as(got: tuple[dict, list], want: tuple[dict, list], tol: float = 1e-5,
                      momentum_tol: float | None = None) -> None:
    assert sorted(got[0]) == sorted(want[0])
    assert_close([got[0][k] for k in sorted(got[0])], [want[0][k] for k in sorted(got[0])], tol)
    assert [m is None for m in got[1]] == [m is None for m in want[1]] == [False] * 6 + [True] * 2
    assert_close(got[1][:6], want[1][:6], momentum_tol or tol)   # the optimizer's shards, gathered whole


def quiet(*_args):
    pass


def sharded(path: str, tmp_path, out: str, *args: str, strategy: str = "fsdp") -> str:
    """`dslc train` in two processes (under FSDP, or DDP: the plan with `--set strategy=ddp`); its output."""
    more = ["--set", f"strategy={strategy}"] if strategy != "fsdp" else []
    done = launch([path, "--plan", "small", "--nproc-per-node", "2", "--out", out, *more, *args], tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stopped_after(run, epoch: int, name: str):
    """A copy `name` of the run folder as it was after `epoch` (killed then, say)."""
    copy = run.parent / name
    shutil.copytree(run, copy)
    for f in [copy / "result.json", *[f for f in copy.glob("checkpoints/epoch-*") if int(f.name[6:10]) > epoch]]:
        f.unlink()
    return copy


# ------------------------------------------------------------------ real runs under torchrun (2 CPU processes)

@pytest.mark.slow
def test_ddp_fsdp_and_one_process_resume_each_others_checkpoints(tmp_path):
    """Epoch 1 under DDP (2 × 32); epochs 2 to 4 in two sharded processes (2 × 32), which load its
    weights and momentum into their shards, train the frozen phase's second epoch, then unfreeze the
    layer, and end with early stopping's `restore_best` (which under FSDP only rank 0 holds in
    memory); then epoch 4 again, from the sharded run's epoch-3 checkpoint, under DDP and in one
    process (32 a batch). Each is torch's own loop over the same batches, momentum included (1e-5),
    and the head the loss leaves out keeps its initial weights. The runs differ in their `strategy`
    only, which --resume lets change (test_sharded_runs_in_bf16... resumes one process's run)."""
    path, start, run = write_plan(tmp_path), start_weights(tmp_path), tmp_path / "run"
    sharded(path, tmp_path, "run", "--max-epochs", "1", strategy="ddp")
    out = sharded(path, tmp_path, "run", "--resume")
    assert "an effective batch of 64; FSDP: weights, gradients and optimizer state sharded" in out
    assert "resuming from run/checkpoints/epoch-0001.json" in out and "done: 4 epochs" in out
    assert_trained_as(checkpoint_of(run, 4), reference(start, [64, 64, 64, 64]))
    assert all(torch.equal(checkpoint_of(run, 4)[0][k], start[k]) for k in ("spare.weight", "spare.bias"))
    assert json.loads((run / "result.json").read_text())["best_epoch"] is not None
    ddp, one = stopped_after(run, 3, "ddp"), stopped_after(run, 3, "one")
    sharded(path, tmp_path, ddp.name, "--resume", strategy="ddp")
    assert_trained_as(checkpoint_of(ddp, 4), reference(start, [64, 64, 64, 64]))
    train(path, "small", Options(out=str(one), resume=True, progress=False), out=quiet)
    assert_trained_as(checkpoint_of(one, 4), reference(start, [64, 64, 64, 32]))


@pytest.mark.slow
@pytest.mark.parametrize("setting, tol, momentum_tol", [
    # bfloat16 keeps 8 bits of mantissa, and each process's matmuls round the sums of 32 examples
    # where one process rounds 64's: the weights end 1.4e-4 apart here, the momentum 6.5e-4, where
    # float32's training is 2.3e-3 and 2.4e-3 away, and the weights moved 0.08 from their start
    ("precision=bf16", 5e-4, 1.5e-3),
    ("compile=true", 1e-5, 1e-5),   # inductor fuses kernels: float32 sums in another order
])
def test_sharded_runs_in_bf16_and_compiled_train_as_torch_does(tmp_path, setting, tol, momentum_tol):
    """Three epochs (the frozen phase, then the first of the unfrozen one: torch.compile compiles the
    step again when the layer unfreezes) in two sharded processes, against torch's own loop in one
    process, uncompiled, under bfloat16 autocast for bf16 (as one process's bf16 runs). The bf16 run
    starts in one process (epoch 1, 32 a batch): two sharded processes resume its checkpoint.
    Compiled, FSDP's backward gives the head the loss leaves out zeros for gradients; dslc drops
    them, so that SGD keeps no momentum for it, as without compile."""
    path, bf16, start = write_plan(tmp_path), setting == "precision=bf16", start_weights(tmp_path)
    if bf16:
        train(path, "small", Options(out=str(tmp_path / "run"), sets=(setting,), max_epochs=1, progress=False),
              out=quiet)
    out = sharded(path, tmp_path, "run", "--set", setting, *(["--resume", "--max-epochs", "2"] if bf16 else
                                                             ["--max-epochs", "3"]))
    assert "FSDP: weights, gradients and optimizer state sharded" in out
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    sizes = [32 if bf16 else 64, 64, 64]
    assert_trained_as(checkpoint_of(tmp_path / "run", 3), reference(start, sizes, bf16=bf16), tol, momentum_tol)
    if bf16:   # and it trained in bfloat16: float32's training is further away
        with pytest.raises(AssertionError):
            assert_trained_as(checkpoint_of(tmp_path / "run", 3), reference(start, sizes), tol, momentum_tol)


def test_resume_lets_the_strategy_change_and_nothing_else(tmp_path):
    """`strategy` changes no batch (the slow tests above train through ddp -> fsdp -> ddp): --resume
    lets it change, as `workers`; a change beside it is still E0606, which names that change only."""
    from dslc.runtime.resume import check_same_plan
    (tmp_path / "plan.dl").write_text("# The plan `small` as it ran\n" + PLAN.replace("fsdp", "ddp"))
    run_text = (tmp_path / "plan.dl").read_text()
    check_same_plan(str(tmp_path), run_text, "small", PLAN, epochs_may_change=False)
    check_same_plan(str(tmp_path), run_text, "small", PLAN.replace("    strategy   = fsdp\n", ""), False)
    with pytest.raises(DslcError) as e:
        check_same_plan(str(tmp_path), run_text, "small", PLAN.replace("seed       = 0", "seed = 1"), False)
    assert e.value.codes == ["E0606"]
    text = e.value.render()
    assert "note: now:     seed = 1" in text and "strategy =" not in text


# ------------------------------------------------------------------ what FSDP refuses, at `dslc check`

BASE = """import "{root}/specs/mlp.dl"
import "{root}/specs/gan.dl"
train p {{
FIELDS
    data = digits()
    epochs = 1
    strategy = fsdp
}}
"""
ONE = " model = MLP(hidden=8, classes=10)\n loss = cross_entropy(out, batch.y)\n optimizer = SGD(lr=0.1)\n"


def check(tmp_path, fields: str) -> DslcError | None:
    (tmp_path / "p.dl").write_text(BASE.format(root=ROOT).replace("FIELDS", fields))
    try:
        load(str(tmp_path / "p.dl")).plan("p")
    except DslcError as e:
        return e
    return None


def test_fsdp_trains_a_plan_of_one_model(tmp_path):
    assert check(tmp_path, ONE) is None
    plan = load(str(tmp_path / "p.dl")).plan("p")
    assert plan.fields["strategy"] == "fsdp"


@pytest.mark.parametrize("fields, says", [
    (ONE + " ema = 0.99\n", "cannot keep an average of sharded weights (`ema`)"),
    (ONE.replace(" epochs", "") + " phase p {\n prune(model, amount=0.5)\n epochs = 1\n }\n",
     "cannot prune sharded weights"),
    (ONE + " phase q {\n quantize(model)\n epochs = 1\n }\n", "cannot quantize a sharded model"),
])
def test_fsdp_refuses_what_it_cannot_shard(tmp_path, fields, says):
    e = check(tmp_path, fields)
    assert e is not None and e.codes == ["E0302"], e and e.render()
    text = e.render()
    assert says in text and "strategy = fsdp\n" in text and "^^^^" in text
    assert "use `strategy = ddp`" in text


@pytest.mark.parametrize("example, plan, says", [
    ("gan/gan.dl", "gan", "`strategy = fsdp` trains plans of one model; this one has 2 (`G`, `D`)"),
    ("contrastive/contrastive.dl", "byol",
     "`strategy = fsdp` cannot keep a momentum copy of a sharded model (`ema(...)` in a step)"),
], ids=["several models", "momentum copy"])
def test_fsdp_refuses_an_example_plan_it_cannot_shard(tmp_path, example, plan, says):
    text = pathlib.Path(ROOT, "examples", example).read_text()
    (tmp_path / "plan.dl").write_text(text.replace(f"train {plan} {{", f"train {plan} {{\n    strategy = fsdp", 1))
    with pytest.raises(DslcError) as e:
        load(str(tmp_path / "plan.dl")).plan(plan)
    assert e.value.codes == ["E0302"]
    assert says in e.value.render()


# ------------------------------------------------------------------ the sharding units (one process)

@pytest.fixture
def one_process_group():
    """A process group of one (gloo), as torchrun's rank 0 of 1, torn down afterwards."""
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_each_repeated_block_is_a_unit_and_whole_weights_come_back(one_process_group):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from dslc.runtime import fsdp
    model = load(ROOT + "/specs/gpt.dl").build("GPT", seed=0, vocab=50, context=16, dim=32, depth=3, heads=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fsdp.shard(model)
    units = sorted(n for n, m in model.named_modules() if isinstance(m, FSDPModule))
    assert units == [""] + [f"h.{i}" for i in range(len(model.h))]
    assert all(isinstance(p, DTensor) for p in model.parameters())
    whole = fsdp.full_weights(model)
    assert sorted(whole) == sorted(before) and all(torch.equal(whole[k], v) for k, v in before.items())
    assert not any(isinstance(v, DTensor) for v in whole.values())


def test_a_sharded_gpt_steps_as_the_whole_one_does(one_process_group):
    """Nested units (the blocks, then the root) and the head tied to the embedding: a step of the
    sharded model is the step of the plain one (in a group of one: gathers and scatters of one shard)."""
    from dslc.runtime import fsdp
    program = load(ROOT + "/specs/gpt.dl")
    plain, sharded = (program.build("GPT", seed=0, vocab=50, context=16, dim=32, depth=2, heads=2) for _ in range(2))
    fsdp.shard(sharded)
    tokens = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    for model in (plain, sharded):
        sgd = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(2):
            F.cross_entropy(model(tokens).transpose(1, 2), tokens).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            sgd.step()
            sgd.zero_grad()
    whole = fsdp.full_weights(sharded)
    assert max((whole[k] - v).abs().max().item() for k, v in plain.state_dict().items()) <= 1e-6
    assert any(not torch.equal(v, w) for v, w in zip(plain.state_dict().values(),
                                                     program.build("GPT", seed=0, vocab=50, context=16, dim=32,
                                                                   depth=2, heads=2).state_dict().values()))
