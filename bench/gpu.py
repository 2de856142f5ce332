"""GPU training throughput of dslc's generated modules against hand-written twins (issue #7).

Cases (`--case`, repeatable; all by default):
  gpt2       GPT-2 124M (specs/gpt.dl at -O1: fused q/k/v, scaled_dot_product_attention) against
             tests/test_specs.py's nanoGPT-style twin, batch 16 × 1024 tokens of vocabulary 50,257;
  gpt2-fast  the same pair with what a compiler can add: the vocabulary padded to 50,304 (a multiple
             of 64; the spec's `vocab` parameter on the dslc side, the same on the twin) and CUDA
             graphs (torch.compile mode="reduce-overhead");
  resnet50   ResNet-50 (specs/resnet.dl at -O1 --channels-last) against tests/test_specs.py's
             torchvision-style twin, batch 256 of 224×224 images, both channels_last;
  gpt2-ddp   dslc's GPT-2 124M (as in gpt2) trained in one process on one GPU, then under
             DistributedDataParallel over N processes (--nproc; every visible GPU by default, nccl),
             each with the same batch of 16 × 1024 tokens (its own tokens) and wrapped as `dslc
             train` wraps a step (dslc.runtime.distributed: DDP around the compiled module). Each
             side is a job of torch's elastic launcher (torchrun), one after the other. Figures:
             tokens/s of the one process, of the DDP job in total and per process (per GPU), the
             scaling efficiency DDP total / (N × one), MFU of both, and a digest of every rank's
             final weights (the ranks must agree, or the case fails: DDP did not sync). With one
             GPU (N = 1) it measures DDP's overhead: DDP in a world of one against the bare module.
Every side trains under bf16 autocast with torch.compile and fused AdamW, on synthetic data made
on the device. The sides alternate in rounds of a few steps in one process; a round ends with
torch.cuda.synchronize(). Figures: tokens (or images) per second, their median ratio
dslc / twin (target ≥ 1.00), and for GPT-2 the model FLOPs utilization, MFU = (6·N + 12·L·d·T)
FLOPs per token × tokens/s ÷ the GPU's dense bf16 peak (PaLM's appendix B, nanoGPT's
estimate_mfu; N counts parameters without the position embedding). Target: ≥ 40% MFU.

    python bench/gpu.py                      # all cases, writes bench/results/gpu.json
    python bench/gpu.py --case gpt2          # one case; the file keeps the other cases' results
    python bench/gpu.py --case gpt2-ddp      # 1 GPU against DDP over every visible GPU
    python bench/gpu.py --case gpt2-ddp --nproc 4           # ... over the first 4 GPUs
    python bench/gpu.py --tiny --device cpu  # a smoke test of the script: tiny models, no timing claims
    python bench/gpu.py --case gpt2-ddp --tiny --device cpu  # DDP's smoke test: 2 CPU processes, gloo

Each case compiles both sides first (a minute or two per case on an H100; gpt2-ddp compiles in
each of its processes), so run the cases one per call where a call has a time limit. The GPU's
peak comes from its name (H100/H200: 989.4 TFLOP/s dense bf16) or from --peak-tflops.

Needs torch with CUDA, networkx, numpy and lark; tests/test_specs.py (the twins) also imports
pytest and click. On a lent machine without network whose image lacks only lark (the case on
this workplace's H100/H200 image), carry its wheel: here, `python3 -m pip download --no-deps
--only-binary=:all: -d .whl lark==1.3.1` (with `/.whl/` in .git/info/exclude), and there,
`python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
PYTHONPATH=/tmp/site:. python3 bench/gpu.py --case gpt2`.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# appended, not first: bench/onnx.py must not hide the onnx package from a process that imports this file
sys.path.append(os.path.join(ROOT, "tests"))
sys.path.append(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import RESULTS, alternate, write  # noqa: E402

import dslc  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.05, "4090": 165.2}
GPT2 = {"vocab": 50257, "context": 1024, "dim": 768, "depth": 12, "heads": 12}
GPT2_TINY = {"vocab": 256, "context": 32, "dim": 64, "depth": 2, "heads": 2}
PADDED_VOCAB = 50304   # 50257 rounded up to a multiple of 64
CASES = ["gpt2", "gpt2-fast", "resnet50", "gpt2-ddp"]


def _twins():
    """The hand-written twins of the zoo test (imported, not copied: one twin per model)."""
    from test_specs import Bottleneck, GPTTwin, ResNetTwin
    return GPTTwin, lambda: ResNetTwin(Bottleneck, [3, 4, 6, 3])


class Side:
    """One side of a comparison: a compiled model, fused AdamW, and a fixed synthetic batch."""

    def __init__(self, model, batch, device, compile_mode: str | None, channels_last: bool = False):
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device=device, memory_format=fmt).train()
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=fused)
        self.forward = torch.compile(self.model, mode=compile_mode) if compile_mode is not None else self.model
        self.x, self.y = batch
        self.device = device

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.forward(self.x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), self.y.reshape(-1))
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> float:
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        return (time.perf_counter() - start) / steps


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def compare(label: str, make_dslc, make_twin, batch, items_per_step: int, device, compile_mode, rounds: int,
            steps: int, channels_last: bool = False) -> dict:
    ours, twin = make_dslc(), make_twin()
    if _params(ours) != _params(twin):
        raise SystemExit(f"{label}: dslc has {_params(ours):,} parameters, the twin {_params(twin):,}")
    a = Side(ours, batch, device, compile_mode, channels_last)
    b = Side(twin, batch, device, compile_mode, channels_last)
    start = time.perf_counter()
    for side in (a, b):
        side.timed(3)   # warm-up, and the compilation
    warmup = time.perf_counter() - start
    dslc_s, twin_s = alternate(a, b, rounds, steps)
    ratios = [t / d for d, t in zip(dslc_s, twin_s)]
    out = {"case": label, "params": _params(ours), "items_per_step": items_per_step,
           "dslc_per_s": items_per_step / statistics.median(dslc_s),
           "twin_per_s": items_per_step / statistics.median(twin_s),
           "median_ratio_dslc_over_twin": statistics.median(ratios),
           "rounds": rounds, "steps_per_round": steps, "warmup_and_compile_s": round(warmup, 1),
           "memory_peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
           if device.type == "cuda" else None}
    print(f"  {label:<34} dslc {out['dslc_per_s']:12,.0f}/s  twin {out['twin_per_s']:12,.0f}/s  "
          f"dslc/twin {out['median_ratio_dslc_over_twin']:.3f}", flush=True)
    return out


def gpt_flops_per_token(cfg: dict, params: int) -> int:
    """6·N + 12·L·d·T: N without the position embedding (the tied head counted once)."""
    n = params - cfg["context"] * cfg["dim"]
    return 6 * n + 12 * cfg["depth"] * cfg["dim"] * cfg["context"]


def _mfu(result: dict, cfg: dict, peak_tflops: float | None) -> None:
    flops = gpt_flops_per_token(cfg, result["params"])
    result["flops_per_token"] = flops
    for side in ("dslc", "twin"):
        tflops = flops * result[f"{side}_per_s"] / 1e12
        result[f"{side}_tflops"] = round(tflops, 1)
        result[f"{side}_mfu"] = round(tflops / peak_tflops, 4) if peak_tflops else None
    if peak_tflops:
        print(f"  {'':<34} MFU dslc {result['dslc_mfu']:.1%}  twin {result['twin_mfu']:.1%}", flush=True)


def gpt_case(label, cfg, vocab, batch_size, device, compile_mode, rounds, steps, peak) -> dict:
    """`vocab`: the tokens' range; cfg["vocab"] may be larger (padded), and its extra logits are never targets."""
    GPTTwin, _ = _twins()
    prog = dslc.load(os.path.join(ROOT, "specs", "gpt.dl"))
    g = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, vocab, (batch_size, cfg["context"] + 1), generator=g, device=device)
    result = compare(label, lambda: prog.build("GPT", seed=0, opt=1, **cfg), lambda: GPTTwin(**cfg),
                     (tokens[:, :-1], tokens[:, 1:]), batch_size * cfg["context"], device, compile_mode, rounds,
                     steps)
    result.update(config=cfg, batch=batch_size, unit="tokens")
    _mfu(result, cfg, peak)
    return result


def resnet_case(label, batch_size, image, device, compile_mode, rounds, steps) -> dict:
    _, resnet50_twin = _twins()
    prog = dslc.load(os.path.join(ROOT, "specs", "resnet.dl"))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch_size, 3, image, image, generator=g, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch_size,), generator=g, device=device)
    result = compare(label, lambda: prog.build("ResNet50", seed=0, opt=1, channels_last=True), resnet50_twin,
                     (x, y), batch_size, device, compile_mode, rounds, steps, channels_last=True)
    result.update(batch=batch_size, image=image, unit="images")
    return result


def peak_tflops(device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    return peak_tflops_of(torch.cuda.get_device_name(device))


def peak_tflops_of(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (None for a CPU or a GPU not in the table)."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def describe(device) -> dict:
    if device.type != "cuda":
        return {"device": "cpu"}
    p = torch.cuda.get_device_properties(device)
    return {"device": torch.cuda.get_device_name(device), "memory_gib": round(p.total_memory / 2**30, 1),
            "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda}


def ddp_case(label: str, cfg: dict, batch_size: int, args, device, peak) -> dict:
    """GPT-2 trained by one process on one device, then by DistributedDataParallel over `--nproc`
    processes of the same per-process batch: each a job of torch's elastic launcher (torchrun), so
    that neither holds the other's memory, and neither shares a process with the other cases."""
    nproc = args.nproc or (torch.cuda.device_count() if device.type == "cuda" else 2)
    if device.type == "cuda" and not 1 <= nproc <= torch.cuda.device_count():
        raise SystemExit(f"--nproc {nproc}: {torch.cuda.device_count()} GPUs are visible here")
    _release(device)
    single = launch_job("single", 1, args)
    ddp = launch_job("ddp", nproc, args)
    if len(set(ddp["weights_sha256"])) != 1:
        raise SystemExit(f"gpt2-ddp: the {nproc} DDP processes ended with different weights: DDP did not sync")
    tokens = batch_size * cfg["context"]
    single_per_s = tokens / single["seconds_per_step"][0]
    total = nproc * tokens / max(ddp["seconds_per_step"])   # the job moves at its slowest process's pace
    one, many = ("GPU", "GPUs") if device.type == "cuda" else ("CPU process", "CPU processes")
    out = {"case": f"{label}, DDP over {nproc} ({ddp['backend']})",
           "comparison": f"DDP over {nproc} {many} against one {one}" if nproc > 1 else
           f"DDP's overhead on one {one}: DDP in a world of one process against the bare module",
           "device": ddp["device"]["device"], "nproc": nproc, "backend": ddp["backend"], "params": ddp["params"],
           "config": cfg, "batch_per_process": batch_size, "unit": "tokens", "single_per_s": single_per_s,
           "ddp_per_s": total, "ddp_per_s_per_process": total / nproc,
           "scaling_efficiency": total / (nproc * single_per_s), "rounds": args.rounds, "steps_per_round": args.steps,
           "seconds_per_step": {"single": single["seconds_per_step"][0], "ddp_ranks": ddp["seconds_per_step"]},
           "memory_peak_gib": {"single": single["memory_peak_gib"][0], "ddp_ranks": ddp["memory_peak_gib"]},
           **{k: ddp[k] for k in ("weights_sha256_start", "weights_sha256", "batch_sha256")}}
    print(f"  {out['case']:<34} one {single_per_s:12,.0f}/s  DDP {total:12,.0f}/s ({total / nproc:,.0f}/s per "
          f"process)  efficiency {out['scaling_efficiency']:.3f}\n  {'':<34} {out['comparison']}", flush=True)
    _ddp_mfu(out, cfg, peak or peak_tflops_of(ddp["device"]["device"]))
    return out


def _ddp_mfu(result: dict, cfg: dict, peak: float | None) -> None:
    """MFU of the single process and of each DDP process (the DDP job's, over its N devices)."""
    flops = gpt_flops_per_token(cfg, result["params"])
    result["flops_per_token"] = flops
    result["peak_bf16_tflops"] = peak
    for side, per_s in (("single", result["single_per_s"]), ("ddp", result["ddp_per_s_per_process"])):
        tflops = flops * per_s / 1e12
        result[f"{side}_tflops_per_process"] = round(tflops, 1)
        result[f"{side}_mfu"] = round(tflops / peak, 4) if peak else None
    if peak:
        print(f"  {'':<34} MFU one {result['single_mfu']:.1%}  DDP {result['ddp_mfu']:.1%}", flush=True)


def _release(device) -> None:
    """The memory this process holds on the GPU (the other cases' compiled graphs, CUDA graph pools),
    given back before the jobs of gpt2-ddp run on the same GPUs."""
    if device.type == "cuda":
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()


def launch_job(mode: str, nproc: int, args) -> dict:
    """Run `nproc` workers of `mode` under torchrun (torch.distributed.run, as `dslc train --nproc-per-node`
    does); what rank 0 reports."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    with tempfile.TemporaryDirectory(prefix="dslc-bench-") as folder:
        report = os.path.join(folder, "report.json")
        worker = [os.path.abspath(__file__), "--worker", mode, "--worker-out", report, "--device", args.device,
                  "--rounds", str(args.rounds), "--steps", str(args.steps)] + ["--tiny"] * args.tiny
        try:
            run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                              *worker]))
        except ChildFailedError as e:
            raise SystemExit(f"gpt2-ddp: the {mode} job failed: {e}") from None
        with open(report) as f:
            return json.load(f)


def ddp_worker(args) -> dict:
    """One process of a gpt2-ddp job: "single" trains the bare compiled module; "ddp" joins the process
    group (even a world of one) and trains it under dslc's DistributedDataParallel wrapper, the one
    `dslc train` uses. Each rank has its own batch (of the same size), so ranks ending with the same
    weights shows that DDP averaged their gradients. Rank 0 writes every rank's figures."""
    from dslc.runtime import distributed as dist
    world = dist.World.from_env()
    device = torch.device("cuda", world.local_rank) if args.device.startswith("cuda") else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.worker == "ddp":
        world.join(device)
    cfg = GPT2_TINY if args.tiny else GPT2
    side = _worker_side(cfg, 2 if args.tiny else 16, device, None if args.tiny else "default", world.rank)
    start = _sha256(side.model.parameters())
    if args.worker == "ddp":   # wrapped as the trainer wraps a step: DDP around the compiled module
        side.forward = dist.data_parallel(side.forward, device)
    side.timed(3)   # warm-up, and the compilation
    seconds = statistics.median([side.timed(args.steps) for _ in range(args.rounds)])
    memory = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    mine = {"seconds_per_step": seconds, "weights_sha256": _sha256(side.model.parameters()),
            "batch_sha256": _sha256([side.x]), "memory_peak_gib": memory}
    ranks = world.gather(mine)
    if world.main:
        report = {k: [r[k] for r in ranks] for k in mine}
        report.update(weights_sha256_start=start, params=_params(side.model), device=describe(device),
                      backend=world.backend)
        with open(args.worker_out, "w") as f:
            json.dump(report, f)
    if args.worker == "ddp":
        world.barrier()   # rank 0 has written: the group may go
        torch.distributed.destroy_process_group()   # not world.stop(), which leaves a world of one alone
    return {}


def _worker_side(cfg: dict, batch_size: int, device, compile_mode, rank: int) -> Side:
    prog = dslc.load(os.path.join(ROOT, "specs", "gpt.dl"))
    g = torch.Generator(device=device).manual_seed(rank)   # rank 0's batch is the single process's
    tokens = torch.randint(0, cfg["vocab"], (batch_size, cfg["context"] + 1), generator=g, device=device)
    return Side(prog.build("GPT", seed=0, opt=1, **cfg), (tokens[:, :-1], tokens[:, 1:]), device, compile_mode)


def _sha256(tensors) -> str:
    """A digest of the tensors' bytes: equal only for bit-identical values."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", action="append", choices=CASES)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny models and sizes, no compilation: a smoke test")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--nproc", type=int, help="gpt2-ddp's processes (default: every visible GPU; 2 on the CPU)")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--out", help="where to write the results (default bench/results/gpu.json; with --tiny, "
                                 "nowhere unless given)")
    # what torchrun starts for gpt2-ddp: one process of its single-process ("single") or DDP ("ddp") job
    p.add_argument("--worker", choices=["single", "ddp"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.worker:
        return ddp_worker(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this benchmark is for a GPU (--tiny --device cpu is a smoke test)")
    peak = peak_tflops(device, args.peak_tflops)
    print(f"training throughput on {describe(device)['device']}:", flush=True)
    results = {case: run_case(case, args, device, peak) for case in args.case or CASES}
    out = args.out or (None if args.tiny else os.path.join(RESULTS, "gpu.json"))
    if out is None:
        return {"cases": results}
    return save(out, results, args, device, peak)


def run_case(case: str, args, device, peak) -> dict:
    cfg, padded = (GPT2_TINY, dict(GPT2_TINY, vocab=320)) if args.tiny else (GPT2, dict(GPT2, vocab=PADDED_VOCAB))
    gpt_batch, resnet_batch, image = (2, 2, 32) if args.tiny else (16, 256, 224)
    compile_mode = None if args.tiny else "default"
    gpt_label = "tiny GPT" if args.tiny else "GPT-2 124M"
    if case == "gpt2":
        return gpt_case(gpt_label, cfg, cfg["vocab"], gpt_batch, device, compile_mode, args.rounds, args.steps, peak)
    if case == "gpt2-fast":
        return gpt_case(f"{gpt_label}, vocab {padded['vocab']}, CUDA graphs", padded, cfg["vocab"], gpt_batch,
                        device, None if args.tiny else "reduce-overhead", args.rounds, args.steps, peak)
    if case == "gpt2-ddp":
        return ddp_case(gpt_label, cfg, gpt_batch, args, device, peak)
    return resnet_case(f"ResNet-50 at {image}×{image}", resnet_batch, image, device, compile_mode, args.rounds,
                       args.steps)


def save(out: str, results: dict, args, device, peak) -> dict:
    """Write the results to `out`, keeping the cases of an earlier run that this one did not run."""
    previous = {}
    if os.path.exists(out):
        with open(out) as f:
            previous = json.load(f).get("cases", {})
    payload = {"what": "training throughput (bf16 autocast, torch.compile, fused AdamW) of dslc's generated "
                       "modules against hand-written twins, alternating rounds in one process; gpt2-ddp: the "
                       "generated GPT-2 in one process against DistributedDataParallel over N processes",
               "targets": {"ratio": "dslc / twin >= 1.00", "gpt2_mfu": ">= 0.40"},
               "torch": torch.__version__, "gpu": describe(device), "peak_bf16_tflops": peak, "tiny": args.tiny,
               "cases": {**previous, **results}}
    if out == os.path.join(RESULTS, "gpu.json"):
        path = write("gpu", payload)
    else:
        with open(out, "w") as f:
            json.dump(payload, f, indent=2)
        path = out
    print(f"written to {os.path.relpath(path, ROOT)}")
    return payload


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
