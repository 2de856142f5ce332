"""Which devices torch can use here, asked before a run starts.

torch accepts any device string until a tensor first goes there, and then fails deep in a
run (`--device cuda` on a CPU-only build, `cuda:99`, `meta`, a typo): `dslc train` and
`dslc sample` check the string first and say what is available instead.
"""
from __future__ import annotations


def device_problem(text: str) -> str | None:
    """Why `text` is not a device this machine can train or sample on, or None when it is."""
    import torch
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return f"{text!r} is not a device: write cpu, cuda, cuda:1, mps, ... ({_available()})"
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


def _available() -> str:
    import torch
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return "available: " + ", ".join(found)
