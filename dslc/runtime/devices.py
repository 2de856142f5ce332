"""Which devices torch can use here, asked before a run starts.

torch accepts any device string until a tensor first goes there, and then fails deep in a
run (`--device cuda` on a CPU-only build is "AssertionError: Torch not compiled with CUDA
enabled"; `cuda:99`, `meta`, a typo fail otherwise): `dslc train` and `dslc sample` check the
string first and say what is available instead. A string that names no device is a usage error
(`spelling_problem`); a device this machine lacks is E0607 (`run_device`), from the command line
and from the Python API alike.
"""
from __future__ import annotations

from ..diagnostics import Diagnostic, DslcError


def spelling_problem(text: str) -> str | None:
    """Why `text` names no device at all (`nonsense`, `cuda:-1`), or None."""
    import torch
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return f"{text!r} is not a device: write cpu, cuda, cuda:1, mps, ... ({_available()})"
    return None


def device_problem(text: str) -> str | None:
    """Why `text` is not a device this machine can train or sample on, or None when it is."""
    import torch
    problem = spelling_problem(text)
    if problem:
        return problem
    device = torch.device(text)
    if device.type == "cpu":
        return None
    if device.type == "meta":
        return "the meta device holds no data: it cannot train or sample"
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if device.type == "mps":
        available = torch.backends.mps.is_available
    if available is None or not available():
        return f"{device.type} is not available here ({_available()})"
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        n = count()
        return f"there is no {device}: this machine has {n} {device.type} device{'s' if n != 1 else ''}"
    return None


def run_device(text: str | None):
    """The torch.device to run on: `text`, or CUDA when present, else the CPU. A device this
    machine cannot use is E0607, raised before anything is read or written."""
    import torch
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(text)
    if problem:
        raise DslcError(Diagnostic("E0607", f"the device `{text}` cannot be used: {problem}",
                                   help="leave out --device to use CUDA when present and the CPU otherwise"))
    return torch.device(text)


def _available() -> str:
    import torch
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return "available: " + ", ".join(found)
