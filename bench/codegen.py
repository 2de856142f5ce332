"""Speed of dslc's generated PyTorch: training against hand-written twins, and -O2 inference.

1. Training step (forward, cross-entropy, backward, SGD with momentum) of the module dslc
   generates against a hand-written PyTorch twin of the same architecture (the twins of
   tests/test_specs.py), eager and under `torch.compile` on both sides:
   - CIFAR ResNet-18 (specs/cifar_resnet.dl), batch 8 of 3×32×32 images. No -O1 pass applies
     to it, so -O1 is the same code as -O0;
   - a small GPT (specs/gpt.dl with vocab 256, context 64, dim 128, depth 4, heads 4), batch 8
     of 64 tokens, at -O0 (attention spelled out) and -O1 (F.scaled_dot_product_attention,
     as the twin, nanoGPT's design, uses).
   The sides alternate in rounds of a few steps in one process; the figure is the median over
   rounds of twin time / dslc time, so 1.00 means as fast as the twin and more is faster.
   Target: ≥ 1.00. A control row times each twin against a second copy of itself (an A/A
   test): how far from 1.00 two identical programs land on this machine.
2. Inference of the CIFAR ResNet-18 compiled with -O2 (batch norm folded into the
   convolutions; channels_last, which -O2 picks for a model whose MACs are mostly 2-d
   convolutions) against -O0, eval mode under torch.inference_mode, batch 16; also
   -O2 --no-channels-last, folding alone. Figure: median of -O0 time / -O2 time. Target: ≥ 1.10.

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
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import alternate, write  # noqa: E402
from torch import nn  # noqa: E402

import dslc  # noqa: E402

GPT_SMALL = {"vocab": 256, "context": 64, "dim": 128, "depth": 4, "heads": 4}


# The hand-written twins are tests/test_specs.py's (imported, so each model has one twin).
from test_specs import CifarResNet18Twin, GPTTwin  # noqa: E402

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
    dslc_s, twin_s = alternate(a, b, rounds, steps)
    ratios = [t / d for d, t in zip(dslc_s, twin_s)]
    out = {"case": label, "compiled": compiled, "params": _params(ours),
           "dslc_step_s": statistics.median(dslc_s), "twin_step_s": statistics.median(twin_s),
           "median_ratio_twin_over_dslc": statistics.median(ratios),
           "rounds": rounds, "steps_per_round": steps, "warmup_and_compile_s": round(warmup, 1)}
    print(f"  {label:<28} {'compiled' if compiled else 'eager   '}  dslc {out['dslc_step_s'] * 1000:8.1f} ms  "
          f"twin {out['twin_step_s'] * 1000:8.1f} ms  twin/dslc {out['median_ratio_twin_over_dslc']:.3f}",
          flush=True)
    return out


def inference_case(prog, label: str, opt: int, channels_last: bool | None, rounds: int, steps: int) -> dict:
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
    rounds = 3 if args.quick else 11
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
    # An A/A control: the twin against a second copy of itself, to read the ratios above against.
    control = [train_case("control: ResNet-18 twin vs twin", CifarResNet18Twin, CifarResNet18Twin, _resnet_batch(),
                          False, rounds, 2),
               train_case("control: GPT twin vs twin", lambda: GPTTwin(**GPT_SMALL), lambda: GPTTwin(**GPT_SMALL),
                          _gpt_batch(), False, rounds, 5)]
    print("inference, CIFAR ResNet-18 optimized against -O0 (higher is better):", flush=True)
    inference = [inference_case(resnet, "-O2 (folding; channels_last, chosen)", 2, None, rounds + 4, 4),
                 inference_case(resnet, "-O2 --no-channels-last (folding only)", 2, False, rounds + 4, 4)]
    path = write("codegen", {
        "what": "training-step time of dslc's generated module against a hand-written twin (median ratio of "
                "alternating rounds, twin / dslc: > 1 is faster), and inference of -O2 against -O0",
        "targets": {"training": "twin / dslc >= 1.00", "inference": "-O0 / -O2 >= 1.10"},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "machine_load_average": list(os.getloadavg()),
        "training": training, "control": control, "inference": inference})
    print(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
