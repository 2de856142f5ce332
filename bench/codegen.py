"""Speed of dslc's generated PyTorch: training against hand-written twins, and -O2 inference.

1. Training step (forward, cross-entropy, backward, SGD with momentum) of the module dslc
   generates against a hand-written PyTorch twin of the same architecture (the twins of
   tests/test_specs.py, copied here), eager and under `torch.compile` on both sides:
   - CIFAR ResNet-18 (specs/cifar_resnet.dl), batch 8 of 3×32×32 images. No -O1 pass applies
     to it, so -O1 is the same code as -O0;
   - a small GPT (specs/gpt.dl with vocab 256, context 64, dim 128, depth 4, heads 4), batch 8
     of 64 tokens, at -O0 (attention spelled out) and -O1 (F.scaled_dot_product_attention,
     as the twin, nanoGPT's design, uses).
   The sides alternate in rounds of a few steps in one process; the figure is the median over
   rounds of twin time / dslc time, so 1.00 means as fast as the twin and more is faster.
   Target: ≥ 1.00.
2. Inference of the CIFAR ResNet-18 compiled with -O2 (batch norm folded into the
   convolutions) against -O0, eval mode under torch.inference_mode, batch 16; also -O2 with
   --channels-last. Figure: median of -O0 time / -O2 time. Target: ≥ 1.10.

    python bench/codegen.py            # writes bench/results/codegen.json
    python bench/codegen.py --quick    # fewer rounds, no torch.compile (a smoke test)

Single-threaded torch (OMP_NUM_THREADS=1, as the tests), on the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import dslc  # noqa: E402
from common import write  # noqa: E402

GPT_SMALL = {"vocab": 256, "context": 64, "dim": 128, "depth": 4, "heads": 4}


# ---------------------------------------------------------------- the twins (from tests/test_specs.py)

class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18Twin(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [CifarBasicBlock(in_planes, planes, stride), CifarBasicBlock(planes, planes)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class GPTBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPTTwin(nn.Module):
    def __init__(self, vocab: int = 50257, context: int = 1024, dim: int = 768, depth: int = 12, heads: int = 12):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(context, dim)
        self.h = nn.ModuleList([GPTBlock(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


# ---------------------------------------------------------------- the cases

def _resnet_batch(batch: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _gpt_batch(batch: int = 8):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, GPT_SMALL["vocab"], (batch, GPT_SMALL["context"] + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def _loss(logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class Trainer:
    """One side of a training comparison: a model, its optimizer, a fixed batch."""

    def __init__(self, model: nn.Module, batch, compiled: bool):
        torch.manual_seed(0)
        self.model = model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.forward = torch.compile(model) if compiled else model
        self.x, self.y = batch

    def step(self) -> None:
        loss = _loss(self.forward(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def train_case(label: str, make_dslc, make_twin, batch, compiled: bool, rounds: int, steps: int) -> dict:
    ours, twin = make_dslc(), make_twin()
    assert _params(ours) == _params(twin), (label, _params(ours), _params(twin))
    a, b = Trainer(ours, batch, compiled), Trainer(twin, batch, compiled)
    start = time.perf_counter()
    for t in (a, b):   # warm-up (and, compiled, the compilation)
        t.timed(3)
    warmup = time.perf_counter() - start
    dslc_s, twin_s = [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        t1, t2 = first.timed(steps), second.timed(steps)
        dslc_s.append(t1 if first is a else t2)
        twin_s.append(t2 if first is a else t1)
    ratios = [t / d for d, t in zip(dslc_s, twin_s)]
    out = {"case": label, "compiled": compiled, "params": _params(ours),
           "dslc_step_s": statistics.median(dslc_s), "twin_step_s": statistics.median(twin_s),
           "median_ratio_twin_over_dslc": statistics.median(ratios),
           "rounds": rounds, "steps_per_round": steps, "warmup_and_compile_s": round(warmup, 1)}
    print(f"  {label:<28} {'compiled' if compiled else 'eager   '}  dslc {out['dslc_step_s'] * 1000:8.1f} ms  "
          f"twin {out['twin_step_s'] * 1000:8.1f} ms  twin/dslc {out['median_ratio_twin_over_dslc']:.3f}",
          flush=True)
    return out


def inference_case(prog, label: str, opt: int, channels_last: bool, rounds: int, steps: int) -> dict:
    base = prog.build("ResNet18", seed=0).eval()
    fast = prog.build("ResNet18", seed=0, opt=opt, channels_last=channels_last)
    fast.load_state_dict(base.state_dict())
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(base(x), fast(x), atol=1e-4, rtol=1e-4)

    def timed(m) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            for _ in range(steps):
                m(x)
            return (time.perf_counter() - start) / steps
    timed(base), timed(fast)
    slow_s, fast_s = [], []
    for r in range(rounds):
        if r % 2 == 0:
            slow_s.append(timed(base))
            fast_s.append(timed(fast))
        else:
            fast_s.append(timed(fast))
            slow_s.append(timed(base))
    ratios = [s / f for s, f in zip(slow_s, fast_s)]
    out = {"case": label, "batch": 16, "params_O0": _params(base), "params_optimized": _params(fast),
           "O0_s": statistics.median(slow_s), "optimized_s": statistics.median(fast_s),
           "median_speedup_O0_over_optimized": statistics.median(ratios), "rounds": rounds, "steps_per_round": steps}
    print(f"  {label:<36} -O0 {out['O0_s'] * 1000:7.1f} ms  optimized {out['optimized_s'] * 1000:7.1f} ms  "
          f"speedup {out['median_speedup_O0_over_optimized']:.3f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and no torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rounds = 3 if args.quick else 9
    resnet = dslc.load(os.path.join(ROOT, "specs", "cifar_resnet.dl"))
    gpt = dslc.load(os.path.join(ROOT, "specs", "gpt.dl"))
    training = []
    print("training step, dslc against a hand-written twin (higher is better for dslc):", flush=True)
    for compiled in ([False] if args.quick else [False, True]):
        training.append(train_case("CIFAR ResNet-18 -O0 (= -O1)", lambda: resnet.build("ResNet18", seed=0),
                                   CifarResNet18Twin, _resnet_batch(), compiled, rounds, 2))
        for opt in (0, 1):
            training.append(train_case(f"small GPT -O{opt}", lambda opt=opt: gpt.build("GPT", seed=0, opt=opt,
                                                                                       **GPT_SMALL),
                                       lambda: GPTTwin(**GPT_SMALL), _gpt_batch(), compiled, rounds, 5))
    print("inference, CIFAR ResNet-18 optimized against -O0 (higher is better):", flush=True)
    inference = [inference_case(resnet, "-O2 (batch norm folded)", 2, False, rounds + 4, 4),
                 inference_case(resnet, "-O2 --channels-last", 2, True, rounds + 4, 4)]
    path = write("codegen", {
        "what": "training-step time of dslc's generated module against a hand-written twin (median ratio of "
                "alternating rounds, twin / dslc: > 1 is faster), and inference of -O2 against -O0",
        "targets": {"training": "twin / dslc >= 1.00", "inference": "-O0 / -O2 >= 1.10"},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "machine_load_average": list(os.getloadavg()),
        "training": training, "inference": inference})
    print(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
