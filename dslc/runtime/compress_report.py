"""`dslc compress-report`: a trained run's model beside its int8 variants.

For the float model and each variant (PyTorch dynamic and static int8, the float ONNX model and its
onnxruntime dynamic and static int8), one row: the size of the file `dslc compile` would write for
it (TorchScript .pt or .onnx) and that file deflated (zip), which shows what pruning saves; the
parameter count and the fraction of zero weights of the trained weights each variant is made from
(int8 weights are symmetric, so a zero stays zero); the loss and metrics on the test split, measured
by `Trainer.evaluate` with the variant in the model's place (the float row is `dslc eval`'s
numbers); and the CPU latency of one example (batch 1), the median of `repeats` runs on one thread.

Static quantization is calibrated on the plan's validation split (else its training split): never
the test split it is measured on. A variant that cannot be made (a model torch.fx cannot trace, an
op onnxruntime cannot quantize) gets a row with the reason, and the others are still measured.

A run of a plan whose last phase quantizes (`quantize(model)`: quantization-aware training) adds
the row `int8 qat`, its own int8 model: the size of RUN/model.int8.pt, and the metrics and latency
of the run's last (fake-quantized) weights converted again as the run converted them, an eager
module as the other PyTorch rows are (its parameters and zeros are those weights'). The float row and
the post-training variants beside it are made from the float weights the quantizing phase started
from (the newest kept epoch checkpoint whose weights are not fake-quantized, else the plan's `init`
when that phase is its first; or --weights), so the
table compares quantization-aware training with post-training quantization of the same model.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import time
import zlib
from dataclasses import dataclass

import torch
from torch import nn

from ..backends.onnx_emit import emit_model
from ..diagnostics import Diagnostic, DslcError
from . import checkpoint, compress, qat
from . import data as data_mod
from .deploy import example_sizes, torchscript
from .evaluate import split_of
from .pruning import all_sparsity
from .restore import INIT, LAST, find_run, load, restore, run_weights
from .rundir import RunDir
from .weights import read_state

FILE = "compress-report.json"


@dataclass
class ReportOptions:
    run: str | None = None
    weights: str | None = None   # best (default), last, or a weights file
    sets: tuple = ()
    repeats: int = 100           # latency: runs of one example, after a few to warm up
    onnx: bool = True            # also the ONNX rows


@dataclass
class Variant:
    name: str
    fmt: str                     # pytorch or onnx
    module: nn.Module | None     # runs the model (an onnxruntime session in a module for ONNX)
    data: bytes = b""            # the file it is saved as
    error: str | None = None


def report(plan, path: str, options: ReportOptions, warn=print) -> dict:
    """The rows of the report, also written as RUN/compress-report.json."""
    quantizing = _quantize_phase(plan)
    which = options.weights
    if quantizing is not None:
        run = find_run(plan, path, options.run)
        which = which or _float_weights(run, plan, quantizing)
    restored = restore(plan, path, options.run, which, "cpu", warn)
    trainer = restored.trainer
    if quantizing is not None:
        _float_model(trainer, restored.weights.path, quantizing)
    key, step = _single(trainer)
    model = trainer.models[key].eval()
    graph = plan.models[key][2]
    test = split_of(trainer, "test")
    fields = _fields(graph, test)
    calibration = _calibration(trainer, fields)
    one = tuple(test[f][:1] for f in fields)
    params, sparsity = all_sparsity(model)
    rows = []
    for variant in _variants(model, graph, calibration, options.onnx):
        row = {"variant": variant.name, "format": variant.fmt}
        if variant.error is not None:
            rows.append(dict(row, error=variant.error))
            continue
        metrics = _measure(trainer, step, model, variant.module, test)
        rows.append(dict(row, bytes=len(variant.data), zipped_bytes=len(zlib.compress(variant.data, 9)),
                         parameters=params, sparsity=round(sparsity, 6), metrics=metrics,
                         latency_ms=_latency(variant.module, one, options.repeats)))
    if quantizing is not None:   # after the PyTorch rows
        at = next((i for i, r in enumerate(rows) if r["format"] != "pytorch"), len(rows))
        rows.insert(at, _qat_row(trainer, key, step, restored.run, quantizing.quantize, test, one, options.repeats))
    result = {"plan": plan.name, "run": restored.run, "weights": restored.weights.path,
              "weights_label": restored.weights.label, "split": "test", "examples": len(test[fields[0]]),
              "threads": 1, "repeats": options.repeats, "engine": compress.engine(), "variants": rows}
    RunDir(restored.run).write_text(FILE, json.dumps(result, indent=2) + "\n")
    result["file"] = os.path.join(restored.run, FILE)
    return result


def _fields(graph, split: dict) -> list[str]:
    """The batch fields the model's inputs take: by name, or `x` for a model of one input."""
    names = [n for n, _ in graph.inputs]
    if all(n in split for n in names):
        return names
    if len(names) == 1 and "x" in split:
        return ["x"]
    raise DslcError(Diagnostic("E0504", f"compress-report feeds the model's inputs ({', '.join(names)}) from the "
                               f"batch fields of the same names; the data has {', '.join(split)}"))


def _calibration(trainer, fields: list) -> list:
    """Batches of the validation split (else the training split) as evaluation sees them (its `augment`)."""
    split = trainer.data.val if trainer.data.val is not None else trainer.data.train
    batches = data_mod.batches(split, compress.CALIBRATION_BATCH, shuffle=False, seed=trainer.seed, epoch=0,
                               augment=trainer.config.augment, train=False)
    count = compress.CALIBRATION_EXAMPLES // compress.CALIBRATION_BATCH
    return [tuple(b[f] for f in fields) for b in itertools.islice(batches, count)]


# ---------------------------------------------------------------------- a quantization-aware run

def _quantize_phase(plan):
    """The phase that quantizes (`quantize(model)`, the plan's last), or None."""
    return next((p for p in plan.phases if p.quantize is not None), None)


def _float_weights(run: str, plan, phase) -> str:
    """The float weights the quantizing phase started from: the newest kept epoch checkpoint whose
    weights are not fake-quantized, or the plan's `init` when the phase is its first (E0502 when
    the run kept no float weights)."""
    for _epoch, batch, json_path in reversed(checkpoint.checkpoints(os.path.join(run, "checkpoints"))):
        weights = json_path[:-len(".json")] + ".safetensors"
        if batch == 0 and os.path.isfile(weights) and not qat.prepared_state(read_state(weights)):
            return weights
    if plan.phases[0] is phase and plan.fields.get("init"):
        return INIT
    raise DslcError(Diagnostic(
        "E0502", f"compress-report puts the run's int8 model beside the float model the phase `{phase.name}` "
        f"started from, but {run} keeps no checkpoint of float weights", phase.quantize.span,
        help="give them with --weights FILE, or keep more checkpoints (`checkpoint(every=1, keep=10)`)"))


def _float_model(trainer, path: str, phase) -> None:
    """The weights given with --weights must be float ones: the fake-quantized are the int8 model's."""
    if any(qat.is_prepared(m) for m in trainer.models.values()):
        raise DslcError(Diagnostic(
            "E0502", f"{path} holds fake-quantized weights of the phase `{phase.name}`; the report's float row and "
            "post-training variants are made from float weights", phase.quantize.span, file_name=path,
            help="leave out --weights (the newest float checkpoint is taken), or give a float phase's checkpoint"))


def _qat_row(trainer, key: str, step, run: str, q, test: dict, one: tuple, repeats: int) -> dict:
    """The run's own int8 model, RUN/model.int8.pt, measured as the other rows are."""
    row = {"variant": "int8 qat", "format": "pytorch"}
    file = os.path.join(run, qat.INT8_FILE)
    if not os.path.isfile(file):
        return dict(row, error=f"{file} is not there: the run has not finished its quantizing phase")
    last = run_weights(run, LAST, list(trainer.models))   # the fake-quantized weights it was made from
    load(trainer, last)
    prepared = trainer.models[key]
    params, sparsity = all_sparsity(prepared)
    with open(file, "rb") as f:
        data = f.read()
    # converted again as the run converted it: an eager module, run as the other PyTorch rows are
    int8 = qat.convert(prepared, q.backend)
    try:
        metrics = _measure(trainer, step, prepared, int8, test)
        latency = _latency(int8, one, repeats)
    finally:
        compress.engine()
    return dict(row, bytes=len(data), zipped_bytes=len(zlib.compress(data, 9)), parameters=params,
                sparsity=round(sparsity, 6), metrics=metrics, latency_ms=latency, backend=q.backend,
                weights=last.path, file=file)


def _single(trainer) -> tuple[str, object]:
    if len(trainer.models) != 1 or len(trainer.steps) != 1:
        raise DslcError(Diagnostic("E0502", f"compress-report measures a plan of one model and one step; "
                                   f"`{trainer.plan.name}` has {len(trainer.models)} models and "
                                   f"{len(trainer.steps)} steps", trainer.plan.decl.name_span))
    return next(iter(trainer.models)), trainer.steps[0]


def _variants(model: nn.Module, graph, calibration: list, with_onnx: bool):
    """The float model and its int8 variants, each made when it is measured (one at a time in memory)."""
    sizes = example_sizes(graph)
    yield _made("float", "pytorch", lambda: (model, torchscript(model, graph, sizes).save()))
    yield _made("int8 dynamic", "pytorch", lambda: _saved(compress.dynamic_int8(_copy(model)), graph, sizes))
    yield _made("int8 static", "pytorch", lambda: _saved(compress.static_int8(_copy(model), calibration), graph,
                                                         sizes))
    if not with_onnx:
        return
    made = _made("float", "onnx", lambda: _onnx_float(model, graph))
    yield made
    if made.error is not None:
        return
    float_onnx = _onnx_proto(made.data)
    feeds = [{i.name: t.numpy() for i, t in zip(float_onnx.graph.input, batch)} for batch in calibration]
    for how in ("dynamic", "static"):
        yield _made(f"int8 {how}", "onnx", lambda how=how: _ort(compress.onnx_int8(float_onnx, how, feeds)))


def _made(name: str, fmt: str, make) -> Variant:
    try:
        module, data = make()
    except DslcError as e:
        return Variant(name, fmt, None, error=e.diagnostics[0].message)
    except Exception as e:  # noqa: BLE001 - torch and onnxruntime fail in many ways; the row says how
        return Variant(name, fmt, None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return Variant(name, fmt, module, data)


def _copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model)


def _saved(module: nn.Module, graph, sizes: dict):
    return module, compress.scripted(module, graph, sizes).save()


def _onnx_float(model: nn.Module, graph):
    state = dict(model.state_dict())
    state.update(model.named_buffers())
    proto = emit_model(graph, {k: v.detach().cpu().numpy() for k, v in state.items()})
    return _ort(proto)


def _onnx_proto(data: bytes):
    import onnx
    return onnx.load_from_string(data)


def _ort(proto):
    """An ONNX model as (a module that runs it in onnxruntime on one thread, its bytes)."""
    data = proto.SerializeToString()
    return OrtModule(data), data


class OrtModule(nn.Module):
    """An onnxruntime session (one thread) behind a module's forward, so that the plan's step runs it."""

    def __init__(self, data: bytes):
        super().__init__()
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *args):
        outs = self.session.run(None, {n: a.detach().cpu().numpy() for n, a in zip(self.names, args)})
        tensors = [torch.from_numpy(o) for o in outs]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _measure(trainer, step, model: nn.Module, module: nn.Module, test: dict) -> dict:
    """The test split's loss and metrics with `module` in the model's place in the plan's step."""
    with _in_place_of(step.module, model, module):
        return trainer.evaluate(test, trainer.phases[-1].batch_size)


@contextlib.contextmanager
def _in_place_of(step: nn.Module, model: nn.Module, module: nn.Module):
    names = [n for n, child in step.named_children() if child is model]
    for n in names:
        setattr(step, n, module)
    try:
        yield
    finally:
        for n in names:
            setattr(step, n, model)


def _latency(module: nn.Module, args: tuple, repeats: int, warmup: int = 10) -> float:
    """The median time of one forward of `args` (batch 1) on one thread, in milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                module(*args)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                module(*args)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return round(statistics.median(times) * 1000, 4)


def table(result: dict) -> str:
    """The rows as an aligned table: size (and × smaller than float's of the same format), zipped,
    parameters, sparsity, the first metric (else the loss) and latency."""
    base = {r["format"]: r["bytes"] for r in result["variants"] if r["variant"] == "float" and "bytes" in r}
    first = next((r for r in result["variants"] if "metrics" in r), None)
    metric = next((k for k in (first or {}).get("metrics", {}) if k != "loss"), "loss")
    head = ["variant", "format", "size", "smaller", "zipped", "params", "sparsity", f"test {metric}", "latency"]
    rows = []
    for r in result["variants"]:
        if "error" in r:
            rows.append([r["variant"], r["format"], f"failed: {r['error']}"])
            continue
        ratio = base[r["format"]] / r["bytes"] if r["format"] in base else None
        rows.append([r["variant"], r["format"], _kib(r["bytes"]), f"{ratio:.2f}x" if ratio else "-",
                     _kib(r["zipped_bytes"]), f"{r['parameters']:,}", f"{r['sparsity']:.1%}",
                     f"{r['metrics'][metric]:.4f}", f"{r['latency_ms']:.3f} ms"])
    widths = [max(len(str(row[i])) for row in [head] + rows if i < len(row)) for i in range(len(head))]
    lines = [f"{result['run']}: {result['weights_label']} weights; the test split, {result['examples']} examples; "
             f"latency: batch 1, median of {result['repeats']}, one thread ({result['engine']} engine)"]
    for row in [head] + rows:
        if len(row) == 3:
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
        else:
            lines.append("  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths))))
    lines.append(f"wrote {result['file']}")
    return "\n".join(lines)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


__all__ = ["FILE", "OrtModule", "ReportOptions", "report", "table"]
