"""Test helpers: one-op graphs for the registry conformance test, and running generated code."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from dslc.api import exec_source
from dslc.backends.torch_codegen import generate
from dslc.frontend.binding import convert
from dslc.ir.graph import Graph
from dslc.ir.naming import name_instances
from dslc.ir.types import TensorType
from dslc.ir.values import Ref, TensorValue
from dslc.ops.registry import Bound, TensorSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Drawer:
    """The `draw` that registry entries' `arbitrary` functions use, backed by hypothesis."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def bool(self) -> bool:
        return self.data.draw(self.st.booleans())

    def choice(self, seq):
        return self.data.draw(self.st.sampled_from(list(seq)))

    def shape(self, min_rank: int, max_rank: int, min_size: int, max_size: int) -> tuple:
        rank = self.int(min_rank, max_rank)
        return tuple(self.int(min_size, max_size) for _ in range(rank))

    def permutation(self, n: int) -> list:
        return list(self.data.draw(self.st.permutations(list(range(n)))))


def single_op_graph(op, example) -> tuple[Graph, list[TensorSpec]]:
    """A graph applying `op` once to fresh inputs, as the evaluator would build it."""
    g = Graph(op.name, "model")
    specs: list[TensorSpec] = []

    def tensor(spec: TensorSpec, name: str) -> TensorValue:
        t = TensorType(tuple(spec.shape), spec.dtype)
        node = g.add("input", [t], names=[name])
        g.inputs.append((name, Ref(node.id)))
        specs.append(spec)
        return TensorValue(Ref(node.id), t, None)

    args, tensors = {}, []
    if op.is_layer:
        tensors = [tensor(s, name) for name, s in layer_inputs(example)]
    for p in op.params + op.keyword_inputs:
        v = example.args.get(p.name, p.default)
        if isinstance(v, TensorSpec):
            v = tensor(v, p.name)
            tensors.append(v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, TensorSpec) for x in v):
            v = tuple(tensor(x, f"{p.name}{i}") for i, x in enumerate(v))
            tensors += list(v)
        elif p.name in example.args:
            v = convert(p, v, None, op.name)
        args[p.name] = v
    positional = tensors[:len(layer_inputs(example))] if op.is_layer else tensors
    b = Bound(op, args, [t.type for t in positional])
    if op.resolve:
        b.args.update(op.resolve(b))
    outs = op.infer(b)
    inst = g.new_instance("layer", op=op, args=op.without_keywords(b.args)) if op.is_layer else None
    node = g.add("op", outs, [t.ref for t in positional + op.keyword_tensors(b.args)], op=op, args=b.args,
                 instance=inst.id if inst else None)
    g.outputs = [(f"out{i}", Ref(node.id, i)) for i in range(len(outs))]
    name_instances(g)
    return g, specs


def layer_inputs(example) -> list:
    """A layer example's input tensors, flat, with their names: `x0`, and `x1_0`, `x1_1` for a tuple
    such as LSTM's (h_0, c_0)."""
    out = []
    for i, s in enumerate(example.inputs):
        if isinstance(s, tuple):
            out += [(f"x{i}_{j}", item) for j, item in enumerate(s)]
        else:
            out.append((f"x{i}", s))
    return out


def random_input(spec: TensorSpec):
    """Random contents: normal floats, ids in [0, 2), or uniform in `spec.values` when given."""
    import torch
    if spec.dtype in ("int64", "int32", "int16", "int8", "uint8"):
        lo, hi = spec.values or (0, 2)
        return torch.randint(int(lo), int(hi), spec.shape, dtype=getattr(torch, spec.dtype))
    if spec.dtype == "bool":
        return torch.rand(spec.shape) > 0.5
    if spec.values is not None:
        lo, hi = spec.values
        return torch.rand(spec.shape, dtype=getattr(torch, spec.dtype)) * (hi - lo) + lo
    return torch.randn(spec.shape, dtype=getattr(torch, spec.dtype))


def run_generated(graph: Graph, specs, seed: int = 0):
    """Generate, execute and run a graph; returns (module, outputs as a list, source)."""
    import torch
    src = generate([graph], "test.dl", seed)
    mod = exec_source(src, f"<test {graph.name}>")
    model = mod.build(graph.name, seed=seed)
    torch.manual_seed(seed + 1)
    inputs = [random_input(s) for s in specs]
    model.eval()
    with torch.no_grad():
        out = model(*inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    return model, outs, src


def program_and_module(tmp_path, text: str, name: str = "m.dl"):
    """The spec `text` written to `tmp_path/name` and loaded, and its generated file executed."""
    import dslc
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    prog = dslc.load(str(path))
    return prog, exec_source(prog.source(), f"<{name}>")


def run_without_dslc(code: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run Python in a subprocess in which `import dslc` fails."""
    blocker = ("import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'dslc' or name.startswith('dslc.'):\n"
               "            raise ImportError('dslc is blocked in this test')\n"
               "sys.meta_path.insert(0, _Block())\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True,
                          cwd=cwd or "/", env=env, timeout=300)


def error_codes(tmp_path, body: str) -> list[str]:
    """The error codes `dslc.load` reports for a model whose body is `body`."""
    import dslc
    from dslc.diagnostics import DslcError
    path = tmp_path / "bad.dl"
    path.write_text(f"model Bad {{\n    {body}\n}}\n")
    try:
        dslc.load(str(path))
    except DslcError as e:
        return e.codes
    return []


def ort_session(model):
    """An onnxruntime session of an ONNX model on the CPU, single-threaded like the tests' torch. For
    a big model, serializing and loading it costs more than running it: one session serves every input."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_run(model, feeds: dict) -> list:
    """Run an ONNX model in onnxruntime on the CPU, single-threaded like the tests' torch."""
    return ort_session(model).run(None, feeds)


def relative_error(got, want) -> float:
    """max |got - want|, relative to the size of `want`, but never to less than 0.01: an output
    that is all near 0 (an RNN's 7e-4) is compared absolutely, where float rounding of
    onnxruntime's own kernels (its RNN's approximate tanh) is about 1e-7."""
    import numpy as np
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")  # a NaN where torch has a number (or the reverse) is a mismatch
    both = ~np.isnan(want)
    if not both.any():
        return 0.0
    got, want = got[both], want[both]
    if not np.array_equal(np.isinf(got), np.isinf(want)) or np.any(got[np.isinf(got)] != want[np.isinf(want)]):
        return float("inf")
    finite = ~np.isinf(want)
    if not finite.any():
        return 0.0
    got, want = got[finite], want[finite]
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-2))


def onnx_parity(graph, specs, seed: int = 0, random_outputs: bool = False):
    """Export `graph` with the generated module's weights, check it fully and compare onnxruntime
    with torch on the same inputs. Returns the largest relative error (shapes only for random ops)."""
    import onnx
    import torch

    from dslc.backends.onnx_emit import emit_model
    src = generate([graph], "test.dl", seed)
    mod = exec_source(src, f"<onnx {graph.name}>")
    net = mod.build(graph.name, seed=seed).eval()
    torch.manual_seed(seed + 1)
    inputs = [random_input(s) for s in specs]
    with torch.no_grad():
        out = net(*inputs)
    want = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    model = emit_model(graph, state)
    onnx.checker.check_model(model, full_check=True)
    got = ort_run(model, {name: x.numpy() for (name, _), x in zip(graph.inputs, inputs)})
    assert len(got) == len(want)
    worst = 0.0
    for g_, w_ in zip(got, want):
        assert tuple(g_.shape) == tuple(w_.shape), (g_.shape, w_.shape)
        if not random_outputs:
            worst = max(worst, relative_error(g_, w_))
    return worst


def train_until_interrupted(monkeypatch, path: str, plan: str, out: str, batch: int) -> None:
    """Train `plan` into `out` in this process and press Ctrl-C as its `batch`-th training batch
    (counted over the run) starts: the run checkpoints mid-epoch and raises Interrupted."""
    import signal

    import pytest
    import torch

    from dslc.api import train
    from dslc.runtime.safety import Interrupted
    from dslc.runtime.trainer import Options, Trainer
    forward, calls = Trainer._forward, []

    def interrupting(self, s, inputs):
        if torch.is_grad_enabled():   # a training batch
            calls.append(1)
            if len(calls) == batch:
                os.kill(os.getpid(), signal.SIGINT)
        return forward(self, s, inputs)
    monkeypatch.setattr(Trainer, "_forward", interrupting)
    with pytest.raises(Interrupted):
        train(path, plan, Options(out=out, progress=False), out=lambda line: None)
    monkeypatch.setattr(Trainer, "_forward", forward)


def unwrapped(source: str) -> str:
    """Generated source with its wrapped calls joined back onto one line (generated lines wrap at 120
    columns: a test that reads a call reads it whole)."""
    return re.sub(r"([(\[,])\n\s+", lambda m: m.group(1) + (" " if m.group(1) == "," else ""), source)
