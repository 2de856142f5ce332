"""Checkpoints: what a run needs to continue exactly where it stopped.

A checkpoint `TAG` is three files in `checkpoints/`:
- `TAG.safetensors`: the models' weights (a single model's under its own state-dict
  names, so the file loads straight into the model; several models' as `NAME.key`);
- `TAG.state.safetensors`: the other tensors (optimizer moments, RNG states, EMA);
- `TAG.json`: everything else (counters, schedules, history), with the SHA-256 of
  both tensor files.

Each file is written to a temporary name and renamed, and the JSON goes last, so a
checkpoint exists only once all of it is on disk: a run killed while writing
leaves the previous checkpoint intact. Nothing is unpickled when reading.

A checkpoint's files are named after its tag and nothing else: reading and removing
never follow names stored in the JSON (a tampered JSON naming `../../x` is refused,
never read or deleted), so only the run's own checkpoint files are ever removed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re

from ..diagnostics import Diagnostic, DslcError
from ..files import atomic_write

_TAG = re.compile(r"^epoch-(\d{4,})(?:-batch-(\d+))?\.json$")
TENSOR_SUFFIXES = (".safetensors", ".state.safetensors")    # weights, then the other tensors
# the temporary files atomic_write leaves when a run is killed mid-write (`NAME.tmp-PID`)
_TEMPORARY = re.compile(r"^(?:epoch-\d{4,}(?:-batch-\d+)?(?:\.json|\.safetensors|\.state\.safetensors)"
                        r"|best\.safetensors)\.tmp-\d+$")


def _tensor_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def under(tensors: dict, prefix: str) -> dict:
    """The entries whose names start with `prefix` (`"G."`, `"optim.train."`), without it: one model's
    weights out of a several-model file, one optimizer's state out of the state tensors."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def tag_for(epoch: int, batch: int = 0) -> str:
    """`epoch-0003`: after 3 epochs; `epoch-0003-batch-00012`: 12 batches into the 4th."""
    return f"epoch-{epoch:04d}" + (f"-batch-{batch:05d}" if batch else "")


def save(folder: str, tag: str, weights: dict, tensors: dict, state: dict) -> str:
    """Write checkpoint `tag`; returns the path of its JSON."""
    os.makedirs(folder, exist_ok=True)
    files = {}
    for suffix, content in zip(TENSOR_SUFFIXES, (weights, tensors)):
        data = _tensor_bytes(content)
        atomic_write(os.path.join(folder, tag + suffix), data)
        files[tag + suffix] = hashlib.sha256(data).hexdigest()
    record = dict(state, files=files)
    path = os.path.join(folder, tag + ".json")
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode())
    return path


def save_weights(path: str, weights: dict, meta: dict | None = None) -> None:
    """A weights-only file (`best.safetensors`), loadable as a state dict."""
    from safetensors.torch import save as to_bytes
    data = to_bytes({k: v.detach().contiguous().cpu() for k, v in weights.items()},
                    metadata={k: str(v) for k, v in (meta or {}).items()})
    atomic_write(path, data)


def checkpoints(folder: str) -> list[tuple[int, int, str]]:
    """(epoch, batch, json path) of every checkpoint in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        m = _TAG.match(name)
        if m:
            out.append((int(m.group(1)), int(m.group(2) or 0), os.path.join(folder, name)))
    return sorted(out)


def error(path: str, why: str) -> DslcError:
    return DslcError(Diagnostic("E0602", f"checkpoint {path} is unusable: {why}", file_name=path,
                                help="delete the checkpoint (the run resumes from the one before) "
                                     "or start a new run without --resume"))


def own_files(path: str) -> list[str]:
    """The tensor files of the checkpoint whose JSON is `path`: named after its tag, in its folder."""
    tag = os.path.basename(path)[:-len(".json")]
    return [os.path.join(os.path.dirname(path), tag + suffix) for suffix in TENSOR_SUFFIXES]


def load(path: str) -> tuple[dict, dict, dict]:
    """(weights, other tensors, state) of the checkpoint whose JSON is `path`; every problem
    (unreadable JSON, a missing or altered tensor file, names that are not the checkpoint's
    own) is an E0602 naming the file."""
    from safetensors.torch import load as from_bytes
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read().decode())
        files = state["files"]
        if not isinstance(files, dict):
            raise TypeError("its `files` entry is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise error(path, f"{type(e).__name__}: {e}") from None
    own = own_files(path)
    if sorted(files) != sorted(os.path.basename(f) for f in own):
        raise error(path, "it names files other than its own two tensor files ("
                   + ", ".join(os.path.basename(f) for f in own) + ")")
    parts = []
    for file in own:
        data = _read(file)
        if hashlib.sha256(data).hexdigest() != files[os.path.basename(file)]:
            raise error(file, "its contents do not match the checksum recorded in " + os.path.basename(path))
        try:
            parts.append(from_bytes(data))
        except Exception as e:  # noqa: BLE001 - a corrupt file, whatever safetensors says about it
            raise error(file, f"{type(e).__name__}: {e}") from None
    return parts[0], parts[1], state


def _read(file: str) -> bytes:
    try:
        with open(file, "rb") as f:
            return f.read()
    except OSError as e:
        raise error(file, e.strerror or str(e)) from None


def remove(path: str) -> None:
    """Delete checkpoint `path` (its JSON first, so a half-deleted checkpoint is never read).
    The names come from the tag, never from the JSON's content: nothing else is removed."""
    if not _TAG.match(os.path.basename(path)):
        raise ValueError(f"{path} is not a checkpoint's JSON")
    for file in [path] + own_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)


def remove_temporary(folder: str) -> None:
    """Delete the temporary files a killed run left in `folder` (only atomic_write's own names)."""
    for name in os.listdir(folder):
        if _TEMPORARY.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
