"""MoCo's queue of negative keys in plan steps: `negatives = queue(k, size=12)`.

The runs are checked against MoCo written by hand from the paper's pseudocode (He et al., CVPR
2020, Algorithm 1): torch's own Linear, ReLU, normalize, cross_entropy and SGD, the key encoder a
momentum copy, the queue a [C, K] tensor whose oldest column each new key replaces."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import dslc
from dslc.api import train
from dslc.diagnostics import DslcError
from dslc.runtime import checkpoint
from dslc.runtime import data as data_mod
from dslc.runtime.trainer import Options, Trainer

torch.set_num_threads(1)

NET = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(16) as fc1
    ReLU()
    Linear(6) as fc2
}
"""

PLAN = NET + """
train p {
    model      = Net()
    data       = digits(limit=%(limit)d, val=%(val)s)
    epochs     = %(epochs)d
    batch_size = 8
    seed       = 0
    step moco {
        key = ema(model, decay=0.9)
        q = normalize(model(batch.x), dim=1)
        k = normalize(detach(key(batch.x * 0.8)), dim=1)
        negatives = queue(k, size=12)
        logits = concat([sum(q * k, dim=1, keepdim=true), q @ transpose(negatives, 0, 1)], dim=1) / 0.2
        loss = cross_entropy(logits, zeros([batch.x.shape[0]], dtype="int64"))
        optimizer = SGD(lr=0.5, momentum=0.9, weight_decay=1e-4)
    }
}
"""
DATA = {"limit": 20, "val": 0.0}   # 20 training examples: batches of 8, 8 and 4; 12 is no multiple of 8


def plan_text(limit=20, val="0.0", epochs=2) -> str:
    return PLAN % {"limit": limit, "val": val, "epochs": epochs}


def write(tmp_path, text: str, name: str = "plan.dl") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(path: str, out, **opts) -> dict:
    return train(path, "p", Options(out=str(out), progress=False, watch=False, **opts), out=lambda *_: None)


def last_checkpoint(folder) -> tuple[dict, dict]:
    found = checkpoint.checkpoints(os.path.join(folder, "checkpoints"))
    weights, tensors, _ = checkpoint.load(found[-1][2])
    return weights, tensors


# ------------------------------------------------------------------ MoCo by hand

def moco_by_hand(start: dict, epochs: int, size: int = 12, m: float = 0.9, t: float = 0.2, rates=None,
                 losses=None) -> tuple:
    """Algorithm 1 of the paper, with the run's batches; the queue starts as dslc documents it:
    `size` rows of C normal draws from a generator seeded with the plan's seed, each of length 1.
    With `rates`, step i's learning rate is rates[i], and it stops after them (lr-find's sweep);
    each step's loss is appended to `losses` (a list) when given."""
    f_q = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6))
    with torch.no_grad():
        for p, name in zip(f_q.parameters(), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]):
            p.copy_(start[name])
    f_k = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6))
    f_k.load_state_dict(f_q.state_dict())          # f_k.params = f_q.params
    f_k.requires_grad_(False)
    queue = F.normalize(torch.randn(size, 6, generator=torch.Generator().manual_seed(0)), dim=1).T.clone()  # [C, K]
    ptr = 0
    sgd = torch.optim.SGD(f_q.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    split = data_mod.load("digits", dict(DATA)).train
    steps = 0
    for epoch in range(1, epochs + 1):
        for batch in data_mod.batches(split, 8, shuffle=True, seed=0, epoch=epoch):
            if rates is not None:
                if steps == len(rates):
                    return f_q, f_k, queue, ptr
                sgd.param_groups[0]["lr"] = rates[steps]
            steps += 1
            x = batch["x"]
            q = F.normalize(f_q(x), dim=1)                       # queries: N x C
            k = F.normalize(f_k(x * 0.8), dim=1).detach()        # keys: N x C
            n = q.shape[0]
            l_pos = torch.bmm(q.view(n, 1, -1), k.view(n, -1, 1)).view(n, 1)
            l_neg = torch.mm(q, queue.clone().detach())          # N x K
            logits = torch.cat([l_pos, l_neg], dim=1)
            loss = F.cross_entropy(logits / t, torch.zeros(n, dtype=torch.long))
            if losses is not None:
                losses.append(loss.item())
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            with torch.no_grad():                                # momentum update of the key encoder
                for pk, pq in zip(f_k.parameters(), f_q.parameters()):
                    pk.mul_(m).add_(pq, alpha=1 - m)
            for key in k:                                        # enqueue, dequeue the oldest
                queue[:, ptr] = key
                ptr = (ptr + 1) % size
    return f_q, f_k, queue, ptr


def test_a_run_is_moco_by_hand_weights_key_encoder_and_queue(tmp_path):
    path = write(tmp_path, plan_text(epochs=2))
    t = Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / "unused"), progress=False, watch=False),
                lambda *_: None)
    t.setup()
    start = {k: v.detach().clone() for k, v in t.models["model"].state_dict().items()}
    run(path, tmp_path / "run")
    weights, tensors = last_checkpoint(tmp_path / "run")
    f_q, f_k, queue, ptr = moco_by_hand(start, epochs=2)
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for name, p in zip(names, f_q.parameters()):
        torch.testing.assert_close(weights[name], p.detach(), rtol=0, atol=1e-6)
        assert not torch.equal(weights[name], start[name])
    for name, p in zip(names, f_k.parameters()):
        torch.testing.assert_close(tensors[f"target.ema_model.{name}"], p, rtol=0, atol=1e-6)
    torch.testing.assert_close(tensors["queue.moco.queue.keys"], queue.T, rtol=0, atol=1e-6)
    assert int(tensors["queue.moco.queue.ptr"]) == ptr == 40 % 12


def test_the_generated_step_holds_the_queue_and_lists_it(tmp_path):
    path = write(tmp_path, plan_text())
    plan = dslc.load(path).plan("p")
    assert [(q.step, q.name, q.size, q.dim) for q in plan.queues.values()] == [("moco", "queue", 12, 6)]
    t = Trainer(plan, path, Options(out=str(tmp_path / "unused"), progress=False, watch=False), lambda *_: None)
    t.setup()
    assert "self.queue = KeyQueue(12, 6)" in t.source and "negatives = self.queue(k)" in t.source
    assert 'QUEUES = {"moco": ["queue"]}' in t.source
    keys = t.queues["moco.queue"].keys
    assert keys.shape == (12, 6) and torch.allclose(keys.norm(dim=1), torch.ones(12))


def test_a_resumed_run_ends_with_the_same_weights_and_queue(tmp_path):
    path = write(tmp_path, plan_text(limit=40, val="0.3", epochs=2))
    run(path, tmp_path / "whole")
    run(path, tmp_path / "parts", max_epochs=1)
    run(path, tmp_path / "parts", resume=True)
    (w1, t1), (w2, t2) = last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "parts")
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert {"queue.moco.queue.keys", "queue.moco.queue.ptr"} <= t1.keys()
    saved = [k for k in t1 if k.startswith(("queue.", "target."))]
    assert all(torch.equal(t1[k], t2[k]) for k in saved)

    # `dslc eval` restores the queue of the weights' epoch: its validation loss is the run's
    from dslc.runtime.restore import restore
    trainer = restore(dslc.load(path).plan("p"), path, str(tmp_path / "whole"), "last", None, lambda *_: None).trainer
    assert torch.equal(trainer.queues["moco.queue"].keys, t1["queue.moco.queue.keys"])

    # without the epoch's checkpoint the queue is the initial one, and eval says so
    for name in os.listdir(tmp_path / "whole" / "checkpoints"):
        if name.startswith("epoch-"):
            os.remove(tmp_path / "whole" / "checkpoints" / name)
    said = []
    trainer = restore(dslc.load(path).plan("p"), path, str(tmp_path / "whole"), "best", None, said.append).trainer
    assert any("the steps read the queue as training started" in s for s in said), said
    assert not torch.equal(trainer.queues["moco.queue"].keys, t1["queue.moco.queue.keys"])


# ------------------------------------------------------------------ misuse

def _error(tmp_path, line: str, where: str = "step") -> tuple[list, str]:
    step = "        negatives = queue(k, size=12)"
    text = plan_text()
    if where == "step":
        text = text.replace(step, line)
    else:
        text = text.replace(step, "        negatives = zeros([12, 6])").replace("    Linear(6) as fc2\n",
                                                                             "    Linear(6) as fc2\n" + line + "\n")
    path = write(tmp_path, text, "bad.dl")
    with pytest.raises(DslcError) as info:
        dslc.load(path).plan("p")
    return info.value.codes, str(info.value)


@pytest.mark.parametrize("line, code, words", [
    ("        negatives = queue(k)", "E0303", "`queue` is missing"),
    ("        negatives = queue(k, size=0)", "E0302", "must be positive"),
    ("        negatives = queue(k, size=12, decay=0.9)", "E0305", "decay"),
    ("        negatives = queue(3, size=12)", "E0301", "expects a tensor"),
    ("        negatives = queue(batch.x, size=12)", "E0402", "2-d input [B, dim]"),
    ("        negatives = queue(transpose(k, 0, 1), size=12)", "E0403", "run-time size"),
])
def test_a_bad_queue_is_a_diagnostic_at_its_line(tmp_path, line, code, words):
    codes, text = _error(tmp_path, line)
    assert codes == [code], text
    assert words in text and "bad.dl:" in text and "^" in text and "Traceback" not in text


def test_a_queue_outside_a_step_is_refused(tmp_path):
    codes, text = _error(tmp_path, "    h = queue(fc2, size=4)", where="model")
    assert codes == ["E0203"] and "made in a training plan's `step`" in text and "bad.dl:8:9" in text


def test_more_keys_than_places_leave_the_newest_as_one_at_a_time_would():
    """KeyQueue.enqueue as generated against a list that takes one key at a time (FIFO of 5)."""
    from torch import nn

    from dslc.ops import HELPERS
    space = {"torch": torch, "nn": nn}
    exec(HELPERS["KeyQueue"].source, space)
    q = space["KeyQueue"](5, 2, seed=3)
    want = list(q.keys.clone())   # index i holds the key written i-th into the ring
    ptr = 0
    for n in (3, 7, 5, 1, 11):
        keys = torch.randn(n, 2)
        q.pending = [keys[: n // 2], keys[n // 2:]]   # two forward passes before the optimizer step
        q.enqueue()
        for key in keys:
            want[ptr] = key
            ptr = (ptr + 1) % 5
        assert torch.equal(q.keys, torch.stack(want)) and int(q.ptr) == ptr and q.pending == []


@pytest.mark.slow
def test_two_processes_gather_their_keys_into_one_queue(tmp_path):
    """DDP, 2 processes of 8: every process enqueues the keys of both, in rank order, so the queue
    (and the weights) end as in one process of 16 (no batch norm: the halves' statistics would differ)."""
    import subprocess
    import sys

    from support import ROOT
    path = write(tmp_path, plan_text(limit=48, epochs=2).replace("size=12", "size=20"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "dslc", "train", path, "--plan", "p", "--nproc-per-node", "2",
                           "--out", "two", "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    run(path, tmp_path / "one", sets=("batch_size=16",))
    (w2, t2), (w1, t1) = last_checkpoint(tmp_path / "two"), last_checkpoint(tmp_path / "one")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5)
    torch.testing.assert_close(t2["queue.moco.queue.keys"], t1["queue.moco.queue.keys"], rtol=0, atol=1e-5)
    assert int(t2["queue.moco.queue.ptr"]) == int(t1["queue.moco.queue.ptr"]) == 48 * 2 % 20


def test_a_queue_in_a_step_that_trains_nothing_is_refused(tmp_path):
    text = plan_text().replace("        optimizer = SGD(lr=0.5, momentum=0.9, weight_decay=1e-4)\n", "")
    path = write(tmp_path, text.replace("    epochs     = 2\n", ""), "bad.dl")
    with pytest.raises(DslcError) as info:
        dslc.load(path).plan("p")
    assert info.value.codes == ["E0502"] and "has no optimizer" in str(info.value) and "bad.dl:19:21" in str(info.value)
