"""Latency of int8 ONNX models against their float originals in onnxruntime, side by side.

For each model, the float ONNX model `dslc compile --target onnx` writes and its int8 versions
(`--quantize dynamic`, and `--quantize static` calibrated on the digits' validation split) run
in turn in onnxruntime on one thread (intra- and inter-op), sequential execution, batch 1 and
batch 64 of digits test images; the figures are medians, and `ratio` is float time / int8 time
(above 1: int8 is faster). Each model's test-split accuracy is measured too, so that the speed
is not bought with wrong answers.

Models: the compression example's MLP (examples/compression: 301,066 parameters) and the
digits CNN (examples/digits). Weights: a trained run's best.safetensors where `--run-dir` holds
runs/compress_float and runs/cnn, else the seeded initial weights (the timings are the same for
any weights of a dense model; the accuracies then mean nothing and are left out).

    python bench/compression.py              # writes bench/results/compression.json
    python bench/compression.py --repeat 50  # fewer runs (a smoke test)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# bench/ holds onnx.py: with this folder first on sys.path (as `python bench/compression.py` puts it),
# `import onnx` would find that file instead of the package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE]
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _common():
    """bench/common.py by path: bench/ on sys.path would let bench/onnx.py hide the onnx package."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_common", os.path.join(ROOT, "bench", "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

CASES = [  # (spec, model, the run that trained it)
    ("examples/compression/compression.dl", "Wide", "compress_float"),
    ("examples/digits/digits.dl", "DigitsCNN", "cnn"),
]
CALIBRATE = "digits(val=0.15, test=0.15)"


def session(data: bytes):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def alternate(sessions: dict, feed: dict, repeat: int) -> dict:
    """Each session run in turn `repeat` times after a warm-up: name -> latencies in seconds."""
    for s in list(sessions.values()) * 3:
        s.run(None, feed)
    times = {name: [] for name in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - t)
    return times


def accuracy(s, name: str, x: np.ndarray, y: np.ndarray) -> float:
    logits = s.run(None, {name: x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--run-dir", default=".", help="the folder holding runs/compress_float and runs/cnn")
    ap.add_argument("--out", default=None, help="the results file (default bench/results/compression.json)")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    import dslc
    from dslc.runtime import data as data_mod
    test = data_mod.load("digits", {"val": 0.15, "test": 0.15}).test
    x, y = test["x"].numpy(), test["y"].numpy()
    results = []
    for spec, model, run in CASES:
        prog = dslc.load(os.path.join(ROOT, spec))
        best = os.path.join(args.run_dir, "runs", run, "checkpoints", "best.safetensors")
        weights = best if os.path.isfile(best) else None
        models = {"float": prog.onnx(model, weights=weights).SerializeToString()}
        for how in ("dynamic", "static"):
            models[f"int8 {how}"] = prog.onnx_quantized(model, how, weights=weights, calibrate=CALIBRATE) \
                .SerializeToString()
        sessions = {k: session(v) for k, v in models.items()}
        name = sessions["float"].get_inputs()[0].name
        row = {"model": model, "weights": os.path.relpath(weights, args.run_dir) if weights else "seeded",
               "bytes": {k: len(v) for k, v in models.items()}}
        if weights:
            row["test_accuracy"] = {k: round(accuracy(s, name, x, y), 6) for k, s in sessions.items()}
        for batch in (1, 64):
            times = alternate(sessions, {name: x[:batch]}, args.repeat if batch == 1 else max(10, args.repeat // 5))
            ms = {k: round(1e3 * statistics.median(v), 4) for k, v in times.items()}
            row[f"batch_{batch}_ms"] = ms
            row[f"batch_{batch}_ratio"] = {k: round(ms["float"] / v, 3) for k, v in ms.items() if k != "float"}
            print(f"{model:10s} batch {batch:2d}: " + "   ".join(f"{k} {v:.4f} ms" for k, v in ms.items()))
        results.append(row)
    payload = {"onnxruntime": ort.__version__, "threads": 1, "repeat": args.repeat, "results": results}
    if args.out:
        import json
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
        path = args.out
    else:
        path = _common().write("compression", payload)
    print(f"written to {os.path.relpath(path, ROOT)}")
    return payload


if __name__ == "__main__":
    main()
