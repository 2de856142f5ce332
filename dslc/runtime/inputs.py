"""`dslc predict --input`: examples read from files, shaped as the plan's data shapes them.

Each file gives examples of the batch fields the model reads (`fields`: name -> TensorType,
without the batch dimension checked here), and the targets `y` when it has them:

- an image (.png, .jpg, ...): one example of an image field `[C, H, W]`, converted to grey
  (C = 1) or RGB (C = 3) and scaled from [0, 255] to the data's range (`scale`, default
  [0, 1]). Its size must be the field's, unless the data set resizes its own images
  (`images(..., size=[H, W])`): then it is resized the same way;
- a CSV file with a header row: one example per row of a feature field `[F]`. The columns
  are the data's features by name when the header has them all (a `csv` data set's, or a
  built-in table's such as iris'), else every column, in order, which must number F. The
  target column (the `csv` set's `target`, else `y` or `target`) gives the targets;
- an .npz file: one array per field, by name (`y` too when present), examples along the
  first axis;
- an .npy file: one array of the model's single field, examples along the first axis (or
  a single example without it).

Anything that does not fit is an E0504 naming the file and both shapes; a file that cannot
be read is E0508 (E0901 when it does not exist).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..catalog import sources
from ..diagnostics import Diagnostic, DslcError
from ..ir.dims import known_value, plain

TARGET_COLUMNS = ("y", "target")
SUFFIXES = sources.IMAGE_SUFFIXES + (".csv", ".npz", ".npy")   # what predict reads


@dataclass
class Inputs:
    split: dict           # field -> tensor [N, ...]: the model's fields, and `y` when every file gives targets
    files: list           # each example's file
    rows: list            # each example's place in its file (row of a CSV, index of an array; 0 for an image)


def read(paths: list[str], fields: dict, data, meta: dict) -> Inputs:
    """The examples of `paths` for the model's `fields` (name -> TensorType with the batch first),
    read as the plan's data set `data` (a PlanCall) reads its own; `meta` is the loaded data's."""
    parts = [_read_one(p, fields, data, meta) for p in paths]
    split = {name: torch.cat([part[name] for part in parts]) for name in fields}
    if all("y" in part for part in parts):
        split["y"] = torch.cat([part["y"] for part in parts])
    files, rows = [], []
    for p, part in zip(paths, parts):
        n = len(part[next(iter(fields))])
        files += [p] * n
        rows += list(range(n))
    return Inputs(split, files, rows)


def _read_one(path: str, fields: dict, data, meta: dict) -> dict:
    if not os.path.exists(path):
        raise DslcError(Diagnostic("E0901", f"no such input file: {path}", file_name=path))
    suffix = os.path.splitext(path)[1].lower()
    try:
        sources.regular_file(path, "input file")
        if suffix in sources.IMAGE_SUFFIXES:
            return _image(path, fields, data)
        if suffix == ".csv":
            return _csv(path, fields, data, meta)
        if suffix == ".npz":
            return _npz(path, fields)
        if suffix == ".npy":
            return _npy(path, fields)
    except sources.DataError as e:
        raise DslcError(Diagnostic(e.code, e.message, file_name=path)) from None
    raise DslcError(Diagnostic("E0508", f"predict reads images ({', '.join(sources.IMAGE_SUFFIXES)}), .csv, .npz "
                               "and .npy files, not this one", file_name=path))


def _misfit(path: str, what: str, field: str, want, help: str | None = None) -> DslcError:
    return DslcError(Diagnostic("E0504", f"{what}, but the model's `{field}` takes {_example(want)}",
                                file_name=path, help=help))


def _example(t) -> str:
    """`[1, 8, 8] of float32`: one example of a field (its type without the batch)."""
    dims = ", ".join(str(plain(d)) for d in t.shape[1:])
    return f"examples of [{dims}] of {t.dtype}"


def _sizes(t) -> list | None:
    sizes = [known_value(d) for d in t.shape[1:]]
    return None if any(s is None for s in sizes) else [int(s) for s in sizes]


def _one_field(path: str, fields: dict, kind: str) -> tuple[str, object]:
    if len(fields) != 1:
        raise DslcError(Diagnostic("E0504", f"{kind} gives one field, but the model reads "
                                   f"{len(fields)}: {', '.join(fields)}", file_name=path,
                                   help="give an .npz file with one array per field, by name"))
    return next(iter(fields.items()))


def _tensor(a: np.ndarray, dtype: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.float32 if dtype.startswith("float") else np.int64)))


# ---------------------------------------------------------------------- images

def _image(path: str, fields: dict, data) -> dict:
    name, t = _one_field(path, fields, "an image")
    sizes = _sizes(t)
    if sizes is None or len(sizes) != 3 or sizes[0] not in (1, 3):
        raise _misfit(path, "an image is one [C, H, W] example", name, t)
    c, h, w = sizes
    Image = sources._pil()
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if (im.size[1], im.size[0]) != (h, w):
                if not (data.entry.name == "images" and data.args.get("size") is not None):
                    raise _misfit(path, f"the image is {im.size[1]}×{im.size[0]} pixels", name, t,
                                  help=f"resize it to {h}×{w} first")
                im = im.resize((w, h), Image.BILINEAR)
            pixels = np.asarray(im, dtype=np.float32).reshape(h, w, c).transpose(2, 0, 1) / np.float32(255.0)
    except OSError as e:
        raise sources.DataError(f"cannot read image {path}: {e}") from None
    lo, hi = _scale(data)
    return {name: torch.from_numpy(np.ascontiguousarray(pixels * (hi - lo) + lo)).unsqueeze(0)}


def _scale(data) -> tuple[float, float]:
    scale = data.args.get("scale")
    if scale is None or len(scale) != 2:
        return 0.0, 1.0
    return float(plain(scale[0])), float(plain(scale[1]))


# ---------------------------------------------------------------------- CSV rows

def _csv(path: str, fields: dict, data, meta: dict) -> dict:
    name, t = _one_field(path, fields, "a CSV file")
    sizes = _sizes(t)
    if sizes is None or len(sizes) != 1:
        raise _misfit(path, "a CSV row is one [F] example of features", name, t)
    rows = sources._rows(path)
    try:
        header = [h.strip() for h in next(rows)[1]]
    except StopIteration:
        raise sources.DataError(f"cannot read input file {path}: it is empty") from None
    columns, target = _columns(path, header, sizes[0], data, meta, name, t)
    xs, ys = [], []
    for line, row in rows:
        if not any(c.strip() for c in row):
            continue
        xs.append([sources.number(path, line, header[i], row[i] if i < len(row) else "") for i in columns])
        if target is not None:
            ys.append(_label(path, line, header[target], row[target].strip() if target < len(row) else "", meta))
    if not xs:
        raise sources.DataError(f"cannot read input file {path}: it has a header but no rows")
    out = {name: torch.tensor(xs, dtype=torch.float32)}
    if target is not None:
        out["y"] = torch.tensor(ys, dtype=torch.float32 if meta.get("class_names") is None else torch.int64)
    return out


def _columns(path: str, header: list, features: int, data, meta: dict, name: str, t) -> tuple[list, int | None]:
    """The indices of the feature columns, and of the target column (or None)."""
    target_names = (str(data.args["target"]),) if data.entry.name == "csv" else TARGET_COLUMNS
    target = next((i for i, h in enumerate(header) if h in target_names), None)
    known = list(meta.get("feature_names") or ())
    if len(known) == features and all(f in header for f in known):
        return [header.index(f) for f in known], target
    columns = [i for i in range(len(header)) if i != target]
    if len(columns) != features:
        what = f"it has {len(columns)} feature column{'s' if len(columns) != 1 else ''}"
        help = f"the columns, by name: {', '.join(known)}" if known else None
        raise _misfit(path, what, name, t, help=help)
    return columns, target


def _label(path: str, line: int, column: str, text: str, meta: dict):
    """A target cell: a class id (by the data's class names, as its own file named them) or a value."""
    names = meta.get("class_names")
    if names is None:
        return sources.number(path, line, column, text)
    if text in names:
        return names.index(text)
    if sources._INT.match(text) and str(int(text)) in names:
        return names.index(str(int(text)))
    raise sources.DataError(f"{path}:{line}: the target {column!r} is {text!r}, not one of the data's classes "
                            f"({', '.join(names[:12])}{', ...' if len(names) > 12 else ''})")


# ---------------------------------------------------------------------- arrays

def _npz(path: str, fields: dict) -> dict:
    header = sources.npz_header(path)
    missing = [f for f in fields if f not in header]
    if missing:
        raise DslcError(Diagnostic("E0504", f"the file has no array {', '.join(repr(f) for f in missing)} for the "
                                   "model to read", file_name=path, help="its arrays: " + ", ".join(header)))
    arrays, _ = sources.npz_arrays(path)
    out = {}
    for name, t in fields.items():
        a = arrays[name]
        if _sizes(t) is not None and list(a.shape[1:]) != _sizes(t) or a.ndim != len(t.shape):
            raise _misfit(path, f"the array {name!r} is {list(a.shape)}", name, t)
        out[name] = _tensor(a, t.dtype)
    if "y" in arrays and "y" not in fields:
        y = arrays["y"]
        out["y"] = _tensor(y, "float32" if y.dtype.kind == "f" else "int64")
    return out


def _npy(path: str, fields: dict) -> dict:
    name, t = _one_field(path, fields, "an .npy file")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise sources.DataError(f"cannot read input file {path}: {e}") from None
    sizes = _sizes(t)
    if sizes is not None and list(a.shape) == sizes:
        a = a[None]   # one example, without the batch dimension
    if a.ndim != len(t.shape) or sizes is not None and list(a.shape[1:]) != sizes:
        raise _misfit(path, f"the array is {list(a.shape)}", name, t)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise sources.DataError(f"the array in {path} holds a NaN or an infinity: data must be finite numbers")
    if a.dtype.kind not in "fiub":
        raise sources.DataError(f"the array in {path} holds {a.dtype}; data fields hold numbers")
    return {name: _tensor(a, t.dtype)}


__all__ = ["Inputs", "read"]
