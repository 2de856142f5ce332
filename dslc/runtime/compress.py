"""Post-training int8 quantization, as `dslc compile --quantize dynamic|static` writes it.

PyTorch (torch.ao.quantization, the x86/fbgemm engine):
- dynamic: `quantize_dynamic` of the Linear, LSTM and GRU layers: int8 weights, activations
  quantized on the fly per batch. No data needed.
- static: FX graph mode post-training quantization (`prepare_fx`, `convert_fx`): the x86
  default qconfig (per-channel int8 weights, histogram observers on the activations), Conv-BN-ReLU
  and Linear-ReLU fused first (FX fuses them while preparing), the observers calibrated on
  example batches of a data set. The generated forward uses functional ops (F.relu, flatten),
  which eager mode's QuantStub wrapping cannot follow; FX traces them.
The result is saved as TorchScript (scripted, else traced), not as a state dict: a quantized
state dict holds packed weights that only a model quantized the same way can load, whereas the
TorchScript archive carries its code and loads with `torch.jit.load` alone, like
`--target torchscript`.

ONNX (onnxruntime.quantization): `quantize_dynamic` (int8 weights of MatMul/Gemm/Conv), and
`quantize_static` in the QDQ format with per-channel weights, calibrated (MinMax) by a
CalibrationDataReader over the same batches.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings

import torch
from torch import nn

from .. import catalog
from ..catalog.sources import DataError
from ..diagnostics import Diagnostic, DslcError, SourceFile, Span
from ..frontend import ast
from ..frontend.binding import Arg, bind_op
from ..frontend.errors import EvalError
from ..frontend.parser import parse_expression
from ..frontend.settings import literal_value
from . import data as data_mod
from .deploy import Deployed, construct, example_inputs

DYNAMIC_LAYERS = (nn.Linear, nn.LSTM, nn.GRU)
CALIBRATION_EXAMPLES = 512      # at most this many examples feed the observers
CALIBRATION_BATCH = 64


def engine() -> str:
    """The quantized engine: x86 (fbgemm with AVX-512 VNNI where present), else fbgemm, else qnnpack."""
    supported = torch.backends.quantized.supported_engines
    chosen = next((e for e in ("x86", "fbgemm", "qnnpack") if e in supported), None)
    if chosen is None:
        raise DslcError(Diagnostic("E0902", "this build of torch has no quantized engine (x86, fbgemm or qnnpack)"))
    torch.backends.quantized.engine = chosen
    return chosen


@contextlib.contextmanager
def quiet():
    """torch.ao.quantization warns that it moves to torchao on every call; the API still works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def dynamic_int8(net: nn.Module) -> nn.Module:
    """The model with int8 dynamically quantized Linear, LSTM and GRU layers (in eval mode)."""
    engine()
    with quiet():
        return torch.ao.quantization.quantize_dynamic(net.eval(), set(DYNAMIC_LAYERS), dtype=torch.qint8)


def static_int8(net: nn.Module, batches: list) -> nn.Module:
    """FX post-training static quantization: fused, observed on `batches` (tuples of forward
    arguments), converted to int8 kernels with per-channel weights."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    name = engine()
    try:
        with quiet():
            prepared = prepare_fx(net.eval(), get_default_qconfig_mapping(name), batches[0])
            with torch.no_grad():
                for args in batches:
                    prepared(*args)
            return convert_fx(prepared)
    except DslcError:
        raise
    except Exception as e:  # noqa: BLE001 - FX tracing fails in many ways on data-dependent code
        raise DslcError(Diagnostic("E0902", f"cannot quantize the model statically: {construct(e)}",
                                   help="`--quantize dynamic` quantizes its Linear and recurrent layers without "
                                        "tracing it")) from None


def scripted(module: nn.Module, graph, sizes: dict) -> Deployed:
    """A quantized module as TorchScript: scripted, else traced at `sizes`."""
    with quiet():
        try:
            return Deployed(torch.jit.script(module), "scripted")
        except Exception as e:  # noqa: BLE001 - torch.jit raises many kinds
            why = construct(e)
        try:
            return Deployed(torch.jit.trace(module, example_inputs(graph, sizes)), "traced",
                            f"torch.jit.script cannot compile it ({why}); traced instead")
        except Exception as e:  # noqa: BLE001
            raise DslcError(Diagnostic("E0902", f"cannot save the quantized model as TorchScript: {construct(e)}")) \
                from None


# ---------------------------------------------------------------------------- ONNX

def onnx_int8(model, how: str, feeds: list | None = None):
    """The ONNX model (a ModelProto) quantized by onnxruntime: `dynamic`, or `static` (QDQ,
    per-channel) calibrated on `feeds` (dicts of input name -> numpy array). Checked, and marked as
    dslc's (producer dslc) so that `dslc compile` may overwrite it."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory() as tmp:
        raw, ready, out = (os.path.join(tmp, f) for f in ("float.onnx", "ready.onnx", "int8.onnx"))
        onnx.save(model, raw)
        with quiet():
            quant_pre_process(raw, ready, skip_symbolic_shape=True)
            if how == "dynamic":
                quantize_dynamic(ready, out, weight_type=QuantType.QInt8)
            else:
                quantize_static(ready, out, _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        result = onnx.load(out)
    result.producer_name, result.producer_version = model.producer_name, model.producer_version
    onnx.checker.check_model(result, full_check=True)
    return result


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


# ---------------------------------------------------------------------------- calibration data

def calibration_call(text: str):
    """`--calibrate 'digits(val=0.1)'`: (data set name, bound arguments) of a data-set call."""
    file = SourceFile("--calibrate", text)
    expr = parse_expression(file, text)
    if isinstance(expr, ast.Name):
        expr = ast.Call(expr.span, expr, (), ())
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in catalog.DATASETS):
        raise DslcError(Diagnostic("E0503", "--calibrate needs a data set call", Span(file, 0, len(text)),
                                   help="for example --calibrate 'digits(val=0.1)'; data sets: "
                                        + ", ".join(catalog.DATASETS)))
    entry = catalog.DATASETS[expr.func.id]
    try:
        positional = [Arg(literal_value(a, file), a.span) for a in expr.args]
        keywords = [(k.name, Arg(literal_value(k.value, file), k.value.span)) for k in expr.kwargs]
        args, _ = bind_op(entry.params, positional, keywords, entry.name, expr.span)
    except EvalError as e:
        raise DslcError(e.diagnostic) from None
    return entry.name, args


def calibration_split(text: str, base_dir: str = ".") -> dict:
    """The split calibration reads: the data's validation split, else its training split (never
    its test split, which measures the result)."""
    name, args = calibration_call(text)
    try:
        splits = data_mod.load(name, args, base_dir)
    except DataError as e:
        raise DslcError(Diagnostic(e.code, f"--calibrate: {e.message}")) from None
    split = splits.val if splits.val is not None else splits.train
    if split is None or isinstance(split, data_mod.Stream):
        raise DslcError(Diagnostic("E0503", f"--calibrate: `{name}` has no examples to calibrate on"))
    return split


def calibration_batches(split: dict, fields: list) -> list:
    """Up to CALIBRATION_EXAMPLES examples of `split` in batches, as forward-argument tuples of `fields`."""
    missing = [f for f in fields if f not in split]
    if missing:
        raise DslcError(Diagnostic("E0503", f"--calibrate: the data has no field `{missing[0]}` for the model's "
                                   f"input (its fields: {', '.join(split)})"))
    n = min(CALIBRATION_EXAMPLES, len(split[fields[0]]))
    return [tuple(split[f][i:i + CALIBRATION_BATCH] for f in fields) for i in range(0, n, CALIBRATION_BATCH)]


__all__ = ["calibration_batches", "calibration_call", "calibration_split", "dynamic_int8", "engine", "onnx_int8",
           "scripted", "static_int8"]
