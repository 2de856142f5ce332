"""A phase's `quantize(model, backend=x86)`: quantization-aware training, then int8.

torch.ao's FX graph mode QAT: as the phase starts, `prepare_qat_fx` with the backend's default QAT
qconfig mapping traces the model, fuses Conv-BN-ReLU (and Linear-ReLU) as the static post-training
path does, and puts fake-quantize modules (an observer and a quantize-dequantize in float) on the
weights and activations; the phase then trains that prepared model, so the weights learn to live
with int8 rounding. Its state dict (the weights, plus each fake-quantize module's scale, zero point
and observed range) is what the phase's checkpoints and best.safetensors hold, so `--resume` goes
on exactly. When the run ends, `convert_fx` makes the int8 model, saved as TorchScript.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from ..diagnostics import Diagnostic, DslcError
from .compress import quiet, scripted
from .deploy import construct
from .weights import Fit, fit_state_dict

# The names torch.ao gives the modules it adds: a fake-quantized layer's `weight_fake_quant`, and
# the `activation_post_process_N` between the layers.
MARKS = ("weight_fake_quant", "activation_post_process")
INT8_FILE = "model.int8.pt"


def use_backend(backend: str) -> None:
    """Make `backend` torch's quantized engine (E0902 when this build of torch lacks it)."""
    if backend not in torch.backends.quantized.supported_engines:
        raise DslcError(Diagnostic("E0902", f"this build of torch has no `{backend}` quantized engine (it has "
                                   f"{', '.join(torch.backends.quantized.supported_engines)})"))
    torch.backends.quantized.engine = backend


def prepare(net: nn.Module, backend: str, example: tuple) -> nn.Module:
    """`net` traced, fused and given fake quantization for training (a torch.fx GraphModule)."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    use_backend(backend)
    try:
        with quiet():
            return prepare_qat_fx(net.train(), get_default_qat_qconfig_mapping(backend), example)
    except Exception as e:  # noqa: BLE001 - FX tracing fails in many ways on data-dependent code
        raise DslcError(Diagnostic("E0902", f"cannot prepare the model for quantization-aware training: "
                                   f"{construct(e)}")) from None


def convert(prepared: nn.Module, backend: str) -> nn.Module:
    """The int8 model of a trained prepared one (a copy, on the CPU, in inference mode)."""
    from torch.ao.quantization.quantize_fx import convert_fx
    use_backend(backend)
    with quiet():
        return convert_fx(copy.deepcopy(prepared).cpu().eval())


@contextlib.contextmanager
def observers_off(nets: list):
    """Evaluation measures the model and changes nothing: the fake-quantize modules keep their ranges
    (an enabled observer would otherwise learn the validation split's)."""
    from torch.ao.quantization import FakeQuantizeBase
    saved = [(m, m.observer_enabled.clone()) for net in nets for m in net.modules() if isinstance(m, FakeQuantizeBase)]
    for m, _ in saved:
        m.disable_observer()
    try:
        yield
    finally:
        for m, enabled in saved:
            m.observer_enabled.copy_(enabled)


def saved(int8: nn.Module, graph, sizes: dict) -> bytes:
    """The int8 model as a TorchScript file (torch.jit.save warns that it is deprecated; it works)."""
    with quiet():
        return scripted(int8, graph, sizes).save()


def is_prepared(net: nn.Module) -> bool:
    return any(_quantizing(name) for name, _ in net.named_modules())


def prepared_state(state: dict) -> bool:
    """Whether a state dict is a prepared model's (it holds fake-quantize modules' buffers)."""
    return any(_quantizing(k) for k in state)


def _quantizing(name: str) -> bool:
    return any(part.startswith(MARKS) for part in name.split("."))


def fit(own: dict, state: dict) -> Fit:
    """`fit_state_dict`, where a fake-quantize buffer may differ in shape: before its first batch a
    per-channel observer holds an empty range and one scale, which loading resizes."""
    found = fit_state_dict(own, state)
    resized = [s[0] for s in found.shapes if _quantizing(s[0])]
    return Fit(found.matched + resized, [s for s in found.shapes if not _quantizing(s[0])], found.missing,
               found.unused)


__all__ = ["INT8_FILE", "convert", "fit", "is_prepared", "observers_off", "prepare", "prepared_state", "saved", "use_backend"]
