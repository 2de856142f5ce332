"""Reading weights into a model: safetensors files and torch state dicts.

Nothing is unpickled beyond tensors (`torch.load(weights_only=True)`), and every
problem names the file: a missing file, an unreadable one, or weights that do not
fit the model (missing or unexpected names, other shapes).
"""
from __future__ import annotations

import os
import re

from ..diagnostics import Diagnostic, DslcError


def read_state(path: str) -> dict:
    """name -> tensor from a .safetensors file or a torch state-dict file."""
    if not os.path.isfile(path):
        what = "no such weights file" if not os.path.exists(path) else "not a weights file (not a regular file)"
        raise DslcError(Diagnostic("E0901", f"{what}: {path}", file_name=path))
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return dict(load_file(path))
        import torch
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the file's fault
        raise DslcError(Diagnostic("E0602", f"cannot read weights from {path}: {_why(e)}", file_name=path,
                                   help="dslc reads .safetensors files and torch state dicts; it never runs code "
                                        "stored in a pickle")) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a checkpoint that wraps the state dict
    if not isinstance(state, dict):
        raise DslcError(Diagnostic("E0602", f"{path} does not hold a state dict (it holds a "
                                   f"{type(state).__name__})", file_name=path))
    _check_tensors(state, path)
    return state


def _why(e: Exception) -> str:
    """What went wrong, in one line. torch.load's refusal of a pickle runs to a page of advice about
    allowlists; its `GLOBAL NAME` says what loading would have called."""
    text = str(e)
    called = re.search(r"\bGLOBAL ([\w.]+)", text)
    if called:
        return f"it holds more than tensors (loading it would call {called.group(1)})"
    if "Weights only load failed" in text:
        return "it is not a torch state-dict file (nor a .safetensors one)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _check_tensors(state: dict, path: str) -> None:
    """Every entry of a state dict must be a tensor under a name."""
    import torch
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise DslcError(Diagnostic("E0602", f"{path} does not hold a state dict of tensors: its entry {k!r} "
                                       f"is {type(v).__name__}", file_name=path,
                                       help="save the weights with torch.save(model.state_dict(), PATH) or as "
                                            ".safetensors"))


def load_into(net, path: str) -> None:
    """Load every weight of `net` from `path`, checking names and shapes first."""
    state = read_state(path)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        notes = []
        if missing:
            notes.append("missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            notes.append("not in the model: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
        notes += wrong[:8]
        raise DslcError(Diagnostic("E0602", f"the weights in {path} do not fit the model", file_name=path,
                                   notes=tuple(notes)))
    net.load_state_dict(state)
