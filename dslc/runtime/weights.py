"""Reading weights into a model: safetensors files and torch state dicts.

Nothing is unpickled beyond tensors (`torch.load(weights_only=True)`), and every
problem names the file: a missing file, an unreadable one, or weights that do not
fit the model (missing or unexpected names, other shapes).

Published weights (torchvision's, a Lightning or timm checkpoint) load by name: the
state dict is unwrapped from `{"state_dict": ...}` / `{"model": ...}`, DDP's `module.`
prefix is dropped, and `rename` rules map prefixes of the file's names to the model's
(`{"conv1": "stem.conv1", "layer1.0": "layer1.basic_block1"}`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from ..diagnostics import Diagnostic, DslcError

WRAPPERS = ("state_dict", "model")   # Lightning's and timm's checkpoints hold the state dict under these


def read_state(path: str, span=None) -> dict:
    """name -> tensor from a .safetensors file or a torch state-dict file (unwrapped from a checkpoint
    that holds it under `state_dict` or `model`). A problem is about `path`, shown at `span` (the plan
    field that names the file) when there is one."""
    try:
        return _read_state(path)
    except DslcError as e:
        if span is None:
            raise
        raise DslcError([replace(d, span=span, label="weights read here") for d in e.diagnostics]) from None


def _read_state(path: str) -> dict:
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
                                        "stored in a pickle (a whole model saved with torch.save(model) is one: "
                                        "save torch.save(model.state_dict(), PATH) instead)")) from None
    state = _unwrapped(state)
    if not isinstance(state, dict):
        raise DslcError(Diagnostic("E0602", f"{path} does not hold a state dict (it holds a "
                                   f"{type(state).__name__})", file_name=path))
    _check_tensors(state, path)
    return state


def _unwrapped(state):
    """The state dict inside a training checkpoint (`{"state_dict": ..., "epoch": 3}`), or `state`."""
    for _ in range(len(WRAPPERS)):
        if not isinstance(state, dict):
            break
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
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
    shapes: list     # in both, other shapes: (name, the file's shape, the model's shape)
    missing: list    # the model's, not in the file
    unused: list     # the file's, not in the model

    @property
    def wrong(self) -> list:
        """The shape mismatches as text: "name (file's shape)≠(model's shape)"."""
        return [f"{n} {a}≠{b}" for n, a, b in self.shapes]

    @property
    def exact(self) -> bool:
        return not (self.shapes or self.missing or self.unused)

    def notes(self) -> tuple:
        return tuple(listed(label, found) for label, found in (("shapes differ", self.wrong),
                                                              ("not in the file", self.missing),
                                                              ("not in the model", self.unused)) if found)


def fit_state_dict(own: dict, state: dict) -> Fit:
    """Compare `state` (name -> tensor, from a file) with a model's `own` state dict."""
    same = [n for n in own if n in state and tuple(state[n].shape) == tuple(own[n].shape)]
    shapes = [(n, tuple(state[n].shape), tuple(own[n].shape)) for n in own
              if n in state and tuple(state[n].shape) != tuple(own[n].shape)]
    return Fit(same, shapes, [n for n in own if n not in state], [n for n in state if n not in own])


def listed(label: str, found: list, shown: int = 6) -> str:
    """`label: a, b, c and 4 more` (without a label: `a, b, c and 4 more`)."""
    if not found:
        return ""
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return (f"{label}: " if label else "") + ", ".join(found[:shown]) + more


# ---------------------------------------------------------------------- renaming

@dataclass
class Renamed:
    """A state dict under the model's names: `state`, with `origin` (new name -> the file's name, for
    the names a rule changed) and the rules that applied to some name."""
    state: dict
    origin: dict = field(default_factory=dict)
    applied: set = field(default_factory=set)

    def file_name(self, name: str) -> str:
        return self.origin.get(name, name)


def within(name: str, prefix: str) -> bool:
    """Whether `prefix` is a whole-component prefix of `name`: `layer1.0` covers `layer1.0.conv1.weight`,
    not `layer1.01.weight`; the empty prefix covers every name."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def renamed(state: dict, rules: dict, path: str, span=None) -> Renamed:
    """`state` with each name under a rule's prefix (the file's) moved under the rule's other prefix (the
    model's): `{"conv1": "stem.conv1"}` makes `conv1.weight` `stem.conv1.weight`. The longest matching
    prefix wins, and each name is renamed once. Two names that end up the same are an error."""
    order = sorted(rules, key=len, reverse=True)
    out = Renamed({})
    for name, tensor in state.items():
        rule = next((p for p in order if within(name, p)), None)
        new = name
        if rule is not None:
            out.applied.add(rule)
            new = ".".join(part for part in (rules[rule], name[len(rule):].lstrip(".")) if part)
        if not new or new in out.state:
            clash = f"{out.file_name(new)} and {name} both become {new}" if new else f"{name} becomes an empty name"
            raise DslcError(Diagnostic("E0602", f"the rename rules make two weights of {path} one: {clash}", span,
                                       file_name=path, help="give each weight its own name"))
        out.state[new] = tensor
        if new != name:
            out.origin[new] = name
    return out


def without_ddp_prefix(state: dict, own: dict) -> dict:
    """A state dict saved from a DistributedDataParallel or DataParallel wrapper has every name under
    `module.`; drop it unless the model's own names are so too."""
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------------- loading by name

def load_by_name(model, state: dict, path: str, rules: dict | None = None, *, skip_mismatched: bool = False,
                 key: str | None = None, span=None) -> dict:
    """Copy into `model` every tensor of `state` (read from `path`) whose name, after `rules`, and
    shape fit; returns the report of what matched and what did not. A shape mismatch is an error
    unless `skip_mismatched` (then the model keeps its own values there, as for a new head)."""
    import torch
    own = model.state_dict()
    moved = renamed(without_ddp_prefix(state, own), rules or {}, path, span)
    fit = fit_state_dict(own, moved.state)
    report = weights_report(fit, moved, path, rules or {}, key, len(own))
    whose = f" `{key}`" if key else ""
    if fit.shapes and not skip_mismatched:
        raise DslcError(Diagnostic("E0602", f"{len(fit.shapes)} weight{'s' if len(fit.shapes) > 1 else ''} in {path} "
                                   f"{'have' if len(fit.shapes) > 1 else 'has'} other shapes than the model{whose}'s",
                                   span, file_name=path, notes=tuple(_mismatch_lines(report)),
                                   help="set `skip_mismatched = true` to keep the model's own values for them "
                                        "(a head with another number of classes, say)"))
    if not fit.matched:
        raise DslcError(Diagnostic("E0602", f"no weight in {path} fits the model{whose}", span, file_name=path,
                                   notes=tuple(x for x in (listed("not in the file", fit.missing),
                                                           listed("in the file", list(state))) if x),
                                   help="map the file's names to the model's with `rename` "
                                        "(`{\"conv1\": \"stem.conv1\"}`)"))
    with torch.no_grad():
        for n in fit.matched:
            own[n].copy_(moved.state[n])
    return report


def weights_report(fit: Fit, moved: Renamed, path: str, rules: dict, key: str | None, total: int) -> dict:
    """What a load by name did, as weights_report.json holds it (names are the model's, but for
    `unused`, which are the file's)."""
    return {"file": path, "model": key, "rename": dict(rules), "loaded": len(fit.matched), "model_tensors": total,
            "renamed": {n: moved.origin[n] for n in fit.matched if n in moved.origin},
            "left_at_initial_values": list(fit.missing),
            "unused_in_file": [moved.file_name(n) for n in fit.unused],
            "shape_mismatches": [{"name": n, "file_name": moved.file_name(n), "file_shape": list(a),
                                  "model_shape": list(b)} for n, a, b in fit.shapes],
            "rules_that_matched_nothing": [r for r in rules if r not in moved.applied]}


def _mismatch_lines(report: dict, shown: int = 10) -> list[str]:
    rows = report["shape_mismatches"]
    lines = [f"{m['name']}: {tuple(m['file_shape'])} in the file, {tuple(m['model_shape'])} in the model"
             + (f" (the file's {m['file_name']})" if m["file_name"] != m["name"] else "") for m in rows[:shown]]
    return lines + ([f"and {len(rows) - shown} more"] if len(rows) > shown else [])


def report_table(report: dict) -> str:
    """The report as a few lines for the terminal."""
    who = f" into `{report['model']}`" if report["model"] else ""
    rules = f" ({len(report['rename'])} rename rule{'s' if len(report['rename']) != 1 else ''})" \
        if report["rename"] else ""
    lines = [f"weights from {report['file']}{who}{rules}: loaded {report['loaded']} of the model's "
             f"{report['model_tensors']} tensors"]
    rows = (("left at their initial values", report["left_at_initial_values"]),
            ("in the file, not in the model", report["unused_in_file"]))
    for label, found in rows:
        if found:
            lines.append(f"  {label:<30}{len(found):>6}  {listed('', found)}")
    if report["shape_mismatches"]:
        lines.append(f"  {'skipped, shapes differ':<30}{len(report['shape_mismatches']):>6}  "
                     + "; ".join(_mismatch_lines(report, 6)))
    return "\n".join(lines)


def load_into(net, path: str, rules: dict | None = None) -> None:
    """Load every weight of `net` from `path` (its names moved by `rules`), checking names and shapes
    first: an export needs them all."""
    state = read_state(path)
    moved = renamed(without_ddp_prefix(state, net.state_dict()), rules or {}, path)
    fit = fit_state_dict(net.state_dict(), moved.state)
    if not fit.exact:
        notes = fit.notes() + tuple(f"the rename rule `{r}` matches no name in the file" for r in (rules or {})
                                    if r not in moved.applied)
        raise DslcError(Diagnostic("E0602", f"the weights in {path} do not fit the model", file_name=path,
                                   notes=notes))
    net.load_state_dict(moved.state)
