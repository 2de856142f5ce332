"""MoCo's queue of negative keys (He et al., "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020): `negatives = queue(k, size=4096)` in a plan's step.

The internal layer `KeyQueue` holds `size` keys of width `dim` that persist across steps. Applied
to this step's keys k [B, dim] it returns the queue as it is ([size, dim]: the keys of earlier
steps, a copy) and, while training, keeps k (detached); after the optimizer step the trainer
calls `enqueue()`, which writes the kept keys over the oldest ones (a ring, MoCo's
`_dequeue_and_enqueue`; any size, no divisibility by the batch needed). It starts as MoCo's does:
random normal keys, each of length 1, drawn from a generator seeded with `seed` (the plan's).
"""
from __future__ import annotations

from ..ir.types import TensorType
from . import checks
from .ptypes import INT
from .registry import Example, OpDef, ParamSpec, S, TorchLayer, helper, register
from .shapes import need_rank, static

helper("KeyQueue", '''
    class KeyQueue(nn.Module):
        """MoCo's queue of negative keys: `forward(k)` returns the keys of earlier steps [size, dim]
        and, while training, keeps k; `enqueue()`, called after the optimizer step, writes the kept
        keys over the oldest ones (a ring). `gather` joins the keys of all processes (DDP)."""

        def __init__(self, size: int, dim: int, seed: int = 0):
            super().__init__()
            keys = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
            self.register_buffer("keys", nn.functional.normalize(keys, dim=1))
            self.register_buffer("ptr", torch.zeros((), dtype=torch.long))   # where the oldest key is
            self.pending = []

        def forward(self, k):
            if self.training:
                self.pending.append(k.detach())
            return self.keys.clone()

        @torch.no_grad()
        def enqueue(self, gather=None):
            if not self.pending:
                return
            keys = torch.cat(self.pending)
            self.pending = []
            if gather is not None:
                keys = gather(keys)
            size, n = self.keys.shape[0], keys.shape[0]
            kept = keys[-size:]   # more keys than places: the newest ones, where a key at a time would leave them
            at = (self.ptr + n - kept.shape[0] + torch.arange(kept.shape[0], device=self.keys.device)) % size
            self.keys[at] = kept.to(self.keys.device, self.keys.dtype)
            self.ptr.copy_((self.ptr + n) % size)
''')


def _resolve(b):
    need_rank(b.x, 2, "queue", "[B, dim] (a batch of keys)")
    return {"dim": static(b.x.shape[1], "the width of the queue's keys (k's last dimension)")}


def _onnx(g, n):
    """An exported step reads the queue as it is: its keys, a constant of the graph."""
    return [g.op("Identity", [n.weight("keys")])]


register(OpDef(
    name="KeyQueue", kind="layer", family="random", stem="queue", internal=True,
    doc="MoCo's queue of negative keys, made by `queue(k, size=4096)` in a plan's step: the keys of earlier "
        "steps [size, dim]; the step's k [B, dim] is written over the oldest ones after the optimizer step.",
    params=(ParamSpec("size", INT, check=checks.positive, doc="how many keys the queue holds"),
            ParamSpec("seed", INT, 0, doc="the seed of its initial random keys")),
    resolve=_resolve,
    infer=lambda b: [TensorType((b["size"], b["dim"]), "float32")],
    buffers=lambda a: {"keys": ((a["size"], a["dim"]), "float32"), "ptr": ((), "int64")},
    pure=False,
    macs=lambda b, out: 0,
    label=lambda a: f"KeyQueue {a['size']}×{a['dim']}",
    torch=TorchLayer("KeyQueue", ("size", "dim"), ("seed",), helpers=("KeyQueue",)),
    onnx=_onnx,
    examples=(Example({"size": 6}, (S(2, 4),)), Example({"size": 3, "seed": 5}, (S(4, 8),))),
    arbitrary=lambda d: Example({"size": d.int(1, 16), "seed": d.int(0, 9)}, (S(d.int(1, 4), d.int(1, 8)),)),
))
