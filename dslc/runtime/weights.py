"""Reading weights into a model: safetensors files and torch state dicts.

Nothing is unpickled beyond tensors (`torch.load(weights_only=True)`), and every
problem names the file: a missing file, an unreadable one, or weights that do not
fit the model (missing or unexpected names, other shapes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

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


@dataclass
class Fit:
    """How a state dict from a file fits a model's: every weight load (the API's `weights=`,
    `--resume`, `init`, `dslc sample`) decides with this one comparison."""
    matched: list    # in both, same shape
    wrong: list      # in both, other shapes: "name (file's shape)≠(model's shape)"
    missing: list    # the model's, not in the file
    unused: list     # the file's, not in the model

    @property
    def exact(self) -> bool:
        return not (self.wrong or self.missing or self.unused)

    def notes(self) -> tuple:
        return tuple(listed(label, found) for label, found in (("shapes differ", self.wrong),
                                                              ("not in the file", self.missing),
                                                              ("not in the model", self.unused)) if found)


def fit_state_dict(own: dict, state: dict) -> Fit:
    """Compare `state` (name -> tensor, from a file) with a model's `own` state dict."""
    same = [n for n in own if n in state and tuple(state[n].shape) == tuple(own[n].shape)]
    wrong = [f"{n} {tuple(state[n].shape)}≠{tuple(own[n].shape)}" for n in own
             if n in state and tuple(state[n].shape) != tuple(own[n].shape)]
    return Fit(same, wrong, [n for n in own if n not in state], [n for n in state if n not in own])


def listed(label: str, found: list, shown: int = 6) -> str:
    """`label: a, b, c and 4 more`."""
    if not found:
        return ""
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return f"{label}: " + ", ".join(found[:shown]) + more


def load_into(net, path: str) -> None:
    """Load every weight of `net` from `path`, checking names and shapes first."""
    state = read_state(path)
    fit = fit_state_dict(net.state_dict(), state)
    if not fit.exact:
        raise DslcError(Diagnostic("E0602", f"the weights in {path} do not fit the model", file_name=path,
                                   notes=fit.notes()))
    net.load_state_dict(state)
