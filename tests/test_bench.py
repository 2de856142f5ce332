"""bench/gpu.py, the GPU throughput benchmark, run tiny on the CPU: the script itself works, and its
MFU arithmetic reproduces the issue's published reference. (No timing is asserted: timings are the
benchmark's to report, never a unit test's.)"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from support import ROOT


def _load_gpu_bench():
    # by path: putting bench/ on sys.path would let bench/onnx.py hide the onnx package from other tests
    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(ROOT, "bench", "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _load_gpu_bench()


def test_flops_per_token_matches_nanogpt_and_the_published_mfu():
    # GPT-2 small: 124,439,808 parameters with the tied head counted once; 1024 × 768 position embeddings.
    flops = gpu.gpt_flops_per_token(gpu.GPT2, 124_439_808)
    assert flops == 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024 == 855_166_464
    # The reference: 297k tokens/s on one H100 is 26% MFU.
    assert round(297e3 * flops / (gpu.PEAK_BF16_TFLOPS["H100"] * 1e12), 2) == 0.26


def test_tiny_run_on_the_cpu_writes_every_case(tmp_path):
    out = tmp_path / "gpu.json"
    in_process = ["--case", "gpt2", "--case", "gpt2-fast", "--case", "resnet50"]   # gpt2-ddp: its own tests
    gpu.main(["--tiny", "--device", "cpu", "--rounds", "1", "--steps", "1", "--out", str(out), *in_process])
    cases = json.loads(out.read_text())["cases"]
    assert set(cases) == {"gpt2", "gpt2-fast", "resnet50"}
    assert cases["gpt2"]["params"] < cases["gpt2-fast"]["params"]   # the padded vocabulary
    assert cases["resnet50"]["params"] == 25_557_032                 # torchvision's resnet50
    for c in cases.values():
        assert c["dslc_per_s"] > 0 and c["twin_per_s"] > 0 and c["median_ratio_dslc_over_twin"] > 0
    assert cases["gpt2"]["dslc_mfu"] is None   # no peak known for a CPU
    # a second run of one case keeps the others
    gpu.main(["--tiny", "--device", "cpu", "--rounds", "1", "--steps", "1", "--case", "gpt2", "--out", str(out)])
    assert set(json.loads(out.read_text())["cases"]) == {"gpt2", "gpt2-fast", "resnet50"}


@pytest.mark.slow   # three processes start (one job of one, one of two): about 10 s on this 2-core machine
def test_ddp_case_on_the_cpu_trains_two_gloo_processes_in_step(tmp_path):
    out = tmp_path / "gpu.json"
    gpu.main(["--tiny", "--device", "cpu", "--case", "gpt2-ddp", "--rounds", "2", "--steps", "1", "--out", str(out)])
    case = json.loads(out.read_text())["cases"]["gpt2-ddp"]
    assert (case["nproc"], case["backend"], case["device"]) == (2, "gloo", "cpu")
    assert case["comparison"] == "DDP over 2 CPU processes against one CPU process"
    assert case["params"] == sum(p.numel() for p in gpu.dslc.load(os.path.join(ROOT, "specs", "gpt.dl")).build(
        "GPT", seed=0, **gpu.GPT2_TINY).parameters())
    assert len(case["seconds_per_step"]["ddp_ranks"]) == 2
    tokens = case["batch_per_process"] * gpu.GPT2_TINY["context"]
    assert case["single_per_s"] == pytest.approx(tokens / case["seconds_per_step"]["single"])
    assert case["ddp_per_s"] == pytest.approx(2 * tokens / max(case["seconds_per_step"]["ddp_ranks"]))
    assert case["scaling_efficiency"] == pytest.approx(case["ddp_per_s"] / (2 * case["single_per_s"]))
    assert case["single_mfu"] is None and case["ddp_mfu"] is None   # no peak known for a CPU
    # each rank trained on its own batch, yet both ended with the same (trained) weights: DDP synced them
    first, second = case["batch_sha256"]
    assert first != second
    assert case["weights_sha256"][0] == case["weights_sha256"][1] != case["weights_sha256_start"]


def _job(seconds: list, weights: list, device: str = "cpu") -> dict:
    """What a job's rank 0 reports (launch_job's answer)."""
    n = len(seconds)
    return {"seconds_per_step": seconds, "weights_sha256": weights, "batch_sha256": [f"b{i}" for i in range(n)],
            "memory_peak_gib": [None] * n, "weights_sha256_start": "s", "params": 124_439_808,
            "device": {"device": device}, "backend": "gloo"}


def test_ddp_figures_and_the_one_gpu_overhead(monkeypatch):
    """The figures of gpt2-ddp from the jobs' step times, worked by hand; with one process the output says
    it is DDP's overhead; ranks that end apart are an error, not a figure."""
    jobs = {"single": _job([0.1], ["w"]), "ddp": _job([0.2, 0.25], ["w", "w"])}
    monkeypatch.setattr(gpu, "launch_job", lambda mode, nproc, args: jobs[mode])
    args = gpu.parser().parse_args(["--tiny", "--device", "cpu", "--nproc", "2"])
    r = gpu.ddp_case("tiny GPT", gpu.GPT2_TINY, 2, args, torch.device("cpu"), 100.0)   # --peak-tflops 100
    # 2 × 32 tokens a step: one process 640/s; DDP 2 × 64 tokens per 0.25 s (its slower rank)
    assert (r["single_per_s"], r["ddp_per_s"], r["ddp_per_s_per_process"]) == pytest.approx((640, 512, 256))
    assert r["scaling_efficiency"] == pytest.approx(0.4)
    flops = gpu.gpt_flops_per_token(gpu.GPT2_TINY, 124_439_808)
    assert r["ddp_mfu"] == round(flops * 256 / 1e12 / 100, 4) and r["single_mfu"] == round(flops * 640 / 1e14, 4)
    jobs["ddp"] = _job([0.125], ["w"])
    one = gpu.ddp_case("tiny GPT", gpu.GPT2_TINY, 2, gpu.parser().parse_args(["--nproc", "1"]),
                       torch.device("cpu"), None)
    assert one["comparison"].startswith("DDP's overhead on one CPU process") and one["scaling_efficiency"] == 0.8
    assert one["ddp_mfu"] is None   # no peak given, and the table has none for a CPU
    jobs["ddp"] = _job([0.125], ["w"], "NVIDIA H100 80GB HBM3")   # the peak from the name the job reports
    assert gpu.ddp_case("tiny GPT", gpu.GPT2_TINY, 2, gpu.parser().parse_args(["--nproc", "1"]),
                        torch.device("cpu"), None)["peak_bf16_tflops"] == 989.4
    jobs["ddp"] = _job([0.2, 0.2], ["w", "v"])
    with pytest.raises(SystemExit, match="different weights: DDP did not sync"):
        gpu.ddp_case("tiny GPT", gpu.GPT2_TINY, 2, args, torch.device("cpu"), None)


def test_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu.main(["--case", "gpt2"])


def _load_train_bench():
    spec = importlib.util.spec_from_file_location("bench_train", os.path.join(ROOT, "bench", "train.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_training_overhead_benchmark_runs(monkeypatch):
    """bench/train.py drives the trainer's own epoch: a change to the trainer must keep it working
    (one round of the MLP case; the ratio is the benchmark's to judge, not this test's)."""
    bench = _load_train_bench()
    monkeypatch.setattr(bench, "ROUNDS", 1)
    case = next(c for c in bench.CASES if c[0] == "digits MLP")
    r = bench.bench_case(*case)
    assert r["rounds"] == 1
    for measure in ("wall", "cpu"):
        m = r[measure]
        assert m["dslc_epoch_s"] > 0 and m["bare_epoch_s"] > 0 and m["aa_control_bare_over_bare"] > 0


def test_the_trainers_epoch_makes_few_calls_beyond_a_hand_written_loops(tmp_path):
    """Issue #15 wants `dslc train --watch off` within 3% of a hand-written loop on the digits MLP, whose
    batch takes about 1.2 ms. What the trainer adds is Python: its calls (functions and builtins, as
    cProfile counts them: a count, which a loaded machine cannot move, where a time could) beyond those
    of bench/train.py's bare loop, per batch of an epoch, its set-up included: 53 before the batch
    loop was trimmed, 34 after."""
    import cProfile
    import pstats

    from dslc.runtime import data as data_mod
    torch.set_num_threads(1)
    bench = _load_train_bench()
    t = bench._trainer(os.path.join(ROOT, "examples", "digits", "digits.dl"), "mlp", str(tmp_path / "run"), watch=False)
    calls = []
    for side in (lambda e: bench._dslc_epoch(t, e), bench._bare_side(t, 64, None, 0.0)):
        side(1)   # warm-up: both are in their steady state
        profile = cProfile.Profile()
        profile.runcall(side, 2)
        calls.append(sum(counts[1] for counts in pstats.Stats(profile).stats.values()))
    assert (calls[0] - calls[1]) / data_mod.steps_per_epoch(t.data.train, 64) < 40, calls


def test_the_compression_benchmark_runs(tmp_path):
    """bench/compression.py with seeded weights (no runs in tmp_path): every model's float and int8 ONNX
    files are made and timed, and the results written (the timings are the benchmark's to judge)."""
    spec = importlib.util.spec_from_file_location("bench_compression", os.path.join(ROOT, "bench", "compression.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "compression.json"
    payload = bench.main(["--repeat", "2", "--run-dir", str(tmp_path), "--out", str(out)])
    assert json.loads(out.read_text()) == payload
    assert [r["model"] for r in payload["results"]] == ["Wide", "DigitsCNN"]
    for r in payload["results"]:
        assert r["weights"] == "seeded" and "test_accuracy" not in r
        assert r["bytes"]["float"] > 3.5 * r["bytes"]["int8 dynamic"]
        assert set(r["batch_1_ms"]) == {"float", "int8 dynamic", "int8 static"}
