"""Every model of specs/ and examples/ exports to ONNX at its real size: the full checker
passes and onnxruntime's outputs equal the PyTorch backend's with the same weights
(relative error below 1e-4), at two batch sizes and sequence lengths (two VGGs are left to
the VGGs with the same layers: COVERED). The ONNX graph text (without weights) of every
spec is a golden file."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import golden
from support import ROOT, ort_session, relative_error

import dslc
from dslc.ir.nesting import nest, structure

ARGUMENTS = {"MLP": {"hidden": 256, "classes": 10},   # models without defaults
             "SineForecaster": {"future": 3}}         # its generated steps too
BIG = {"VGG11", "VGG11BN", "VGG16", "VGG16BN", "ViT", "GPT", "ResNet50", "ResNet34", "AlexNet", "UNet", "UNetBilinear",
       "BertClassifier", "Seq2SeqTransformer"}
FILES = sorted(glob.glob(os.path.join(ROOT, "specs", "*.dl"))) + [os.path.join(ROOT, "examples", "language.dl")]
# the training examples' own models (their imports are tested where they are declared)
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "*.dl")))


def _own_models(path: str) -> list:
    prog = dslc.load(path)
    return [m for m in prog.models if prog.unit.decls[m].span.file.name == prog.unit.root.name]


# Models whose onnxruntime comparison another model's covers (each has its graph text golden below):
# four VGGs are 132-138 M weights each, and what takes the time is copying, checking and loading those
COVERED = {"VGG11": "VGG16: the same layers", "VGG16BN": "VGG11BN: the same layers with batch norm"}


def _cases():
    out = []
    for path in FILES + EXAMPLES:
        for name in (dslc.load(path).models if path in FILES else _own_models(path)):
            if name in COVERED:
                continue
            marks = [pytest.mark.slow] if name in BIG else []
            out.append(pytest.param(path, name, id=f"{os.path.relpath(path, ROOT)}-{name}", marks=marks))
    return out


# Models whose id 0 is padding get ids from 1: a row of padding alone has no key to attend to, which
# torch's eval path makes NaN and ONNX 0 (tests/test_translator.py feeds it real padded batches).
PADDED = {"Translator"}


def _inputs(graph, sizes: dict, rng):
    feeds = {}
    low = 1 if graph.name in PADDED else 0
    for name, ref in graph.inputs:
        t = graph.type_of(ref)
        shape = t.concrete(**sizes)
        feeds[name] = (rng.integers(low, low + 2, shape) if t.dtype == "int64" else rng.random(shape)).astype(
            np.int64 if t.dtype == "int64" else np.float32)
    return feeds


@pytest.mark.parametrize("path,name", _cases())
def test_model_matches_pytorch_in_onnxruntime(path, name):
    import torch
    prog = dslc.load(path)
    params = ARGUMENTS.get(name, {})
    model = prog.onnx(name, seed=0, **params)  # the full checker runs inside
    graph = prog.graph(name, **params)
    net = prog.build(name, seed=0, **params).eval()
    session = ort_session(model)
    rng = np.random.default_rng(0)
    for sizes in ({"B": 2, "T": 5, "S": 3, "H": 12, "W": 16}, {"B": 3, "T": 7, "S": 6, "H": 9, "W": 13}):
        if name in BIG:   # two other batch sizes still; one image of VGG takes 3 s here
            sizes = dict(sizes, B=sizes["B"] - 1)
        feeds = _inputs(graph, sizes, rng)
        got = session.run(None, feeds)
        with torch.no_grad():   # a tuple input (`hidden.0`, `hidden.1`) is one argument, a tuple
            out = net(*nest(structure(list(feeds)), [torch.from_numpy(v) for v in feeds.values()]))
        want = [o.numpy() for o in _flat(out)]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert relative_error(g, w) < 1e-4, (name, sizes, relative_error(g, w))


def _flat(out) -> list:
    """A model's results in ONNX's order: a tuple's tensors one by one."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _zero_state(graph, prefix: str = "") -> dict:
    """Every weight and buffer as zeros of its shape (the graph text does not depend on values)."""
    from dslc.ir.dims import plain
    state = {}
    for inst in graph.instances.values():
        if inst.kind == "block":
            state.update(_zero_state(inst.graph, f"{prefix}{inst.name}."))
            continue
        for key, shape in inst.weights().items():
            state[f"{prefix}{inst.name}" + (f".{key}" if key else "")] = np.zeros([plain(d) for d in shape], np.float32)
        for key, (shape, dtype) in inst.buffers().items():
            state[f"{prefix}{inst.name}" + (f".{key}" if key else "")] = np.zeros([plain(d) for d in shape], dtype)
    for node in graph:
        if node.kind == "call":
            inst = graph.instances[node.instance]
            state.update(_zero_state(node.args["graph"], f"{prefix}{inst.name}."))
    return state


def _shape_only(from_array, weights: dict):
    """onnx's from_array, except that a weight of `weights` becomes a tensor of its name, type and shape
    without data: the text below drops the initializers anyway, and copying the four VGGs' 530 M zeros
    into them and through protobuf took almost all of this test's minute. Constants (no name) are whole."""
    import onnx

    def convert(array, name=None):
        if name is None or name not in weights:
            return from_array(array, name)
        tensor = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.dims.extend(array.shape)
        return tensor
    return convert


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_onnx_graph_text(path, update_goldens, monkeypatch):
    import onnx

    from dslc.backends.onnx_emit import emit_model
    prog = dslc.load(path)
    texts = []
    for name in prog.models:
        graph = prog.graph(name, **ARGUMENTS.get(name, {}))
        state = _zero_state(graph)
        monkeypatch.setattr(onnx.numpy_helper, "from_array", _shape_only(onnx.numpy_helper.from_array, state))
        model = emit_model(graph, state)
        monkeypatch.undo()
        del model.graph.initializer[:]  # the text without weights
        texts.append(onnx.printer.to_text(model.graph))
    stem = os.path.splitext(os.path.relpath(path, ROOT))[0].replace(os.sep, "__")
    golden(os.path.join(ROOT, "tests", "golden", "onnx", stem + ".onnx.txt"), "\n".join(texts), update_goldens)
