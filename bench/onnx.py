"""onnxruntime latency of dslc's native ONNX against torch.onnx.export(dynamo=True) of the
same module, side by side in one run.

Models: the ImageNet ResNet-18 (specs/resnet.dl) and a small Transformer classifier
(specs/transformer.dl), at batch 1 and 32. Both ONNX files hold the same weights and run in
identically configured onnxruntime sessions (all graph optimizations, the machine's cores);
their timed runs alternate, so load or thermal drift hits both. `ratio` is torch's median
latency / dslc's: at least 1.0 means dslc's graph is no slower (the target).

    python bench/onnx.py [--repeat 30]        (needs: pip install -c constraints.txt -e ".[bench]")
Results: bench/results/onnx.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from common import ROOT, write

# This file is named onnx.py: with its folder first on sys.path, `import onnx` would find it.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE]
sys.path.insert(0, ROOT)

CASES = [("resnet.dl", "ResNet18", {}, "image"), ("transformer.dl", "TransformerClassifier", {}, "tokens")]
SEQUENCE = 128


def feeds(graph, batch: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, ref in graph.inputs:
        t = graph.type_of(ref)
        shape = t.concrete(B=batch, T=SEQUENCE)
        out[name] = rng.integers(0, 100, shape).astype(np.int64) if t.dtype == "int64" else \
            rng.random(shape, dtype=np.float32)
    return out


def torch_export(net, example: dict, graph, path: str) -> None:
    import torch
    args = tuple(torch.from_numpy(v) for v in example.values())
    dims = []
    for _name, ref in graph.inputs:
        t = graph.type_of(ref)
        dims.append({i: torch.export.Dim(str(d), min=1) for i, d in enumerate(t.shape) if not str(d).isdigit()})
    program = torch.onnx.export(net, args, dynamo=True, dynamic_shapes=tuple(dims), verbose=False)
    program.save(path)


def session(path: str):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def alternate(a, b, feed: dict, repeat: int) -> tuple[list, list]:
    """Run a and b in turn `repeat` times after a warm-up: their latencies in seconds."""
    for s in (a, b, a, b):
        s.run(None, feed)
    ta, tb = [], []
    for _ in range(repeat):
        for s, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            s.run(None, feed)
            out.append(time.perf_counter() - t)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    import torch

    import dslc
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec, name, params, _ in CASES:
            prog = dslc.load(os.path.join(ROOT, "specs", spec))
            graph = prog.graph(name, **params)
            ours = os.path.join(tmp, f"{name}.dslc.onnx")
            with open(ours, "wb") as f:
                f.write(prog.onnx(name, seed=0, **params).SerializeToString())
            net = prog.build(name, seed=0, **params).eval()
            theirs = os.path.join(tmp, f"{name}.torch.onnx")
            torch_export(net, feeds(graph, 2), graph, theirs)
            a, b = session(ours), session(theirs)
            for batch in (1, 32):
                feed = feeds(graph, batch)
                mine, torchs = alternate(a, b, feed, args.repeat if batch == 1 else max(5, args.repeat // 3))
                check = max(float(np.max(np.abs(x - y))) for x, y in zip(a.run(None, feed), b.run(None, feed)))
                results.append({
                    "model": name, "batch": batch, "dslc_ms": round(1e3 * statistics.median(mine), 3),
                    "torch_export_ms": round(1e3 * statistics.median(torchs), 3),
                    "ratio": round(statistics.median(torchs) / statistics.median(mine), 3),
                    "max_abs_difference": check,
                    "nodes": {"dslc": len(_load(ours).graph.node), "torch_export": len(_load(theirs).graph.node)},
                })
                r = results[-1]
                print(f"{name:22s} batch {batch:3d}: dslc {r['dslc_ms']:9.3f} ms   torch.onnx.export "
                      f"{r['torch_export_ms']:9.3f} ms   ratio {r['ratio']:.3f}")
    path = write("onnx", {"target": "ratio >= 1.0 (dslc no slower)", "sequence_length": SEQUENCE,
                          "torch": torch.__version__, "results": results,
                          "meets_target": all(r["ratio"] >= 1.0 for r in results)})
    print(f"written to {os.path.relpath(path, ROOT)}")


def _load(path):
    import onnx
    return onnx.load(path, load_external_data=False)


if __name__ == "__main__":
    main()
