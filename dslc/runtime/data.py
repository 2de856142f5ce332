"""Data sets as tensors for `dslc train`: load and split, batch, augment.

- `load(name, args, base_dir)` reads a catalog data set (its arrays come from
  `catalog/sources.py`), keeps only the examples of the listed `labels` when a classification
  set is given them, and splits it by seed: a permutation from numpy's
  `default_rng(seed)`; the test split is its first round(n·test) examples, the
  validation split the next round(n·val), training the rest, in permuted order.
- A stream data set (`shakespeare(stream=true)`) loads as one `Stream` per split: contiguous
  stretches of the text (training, validation, test, in that order; no seed), batched in order
  as word_language_model's batchify does, for truncated BPTT (`Stream`).
- `batches` indexes the in-memory tensors. The order of an epoch and every random
  draw of augmentation depend only on (seed, epoch) and the batch's index, so a
  resumed run sees the very same batches. The last, partial batch is kept.
- `check_requirements` refuses, before a run, batches too small for a model's run-time
  requirements (`h[7]` on the batch needs B > 7), the last partial batch of each split included.
- With the plan's `workers` (`loader`), an image folder, an .npz or a CSV file stays on disk
  (`sources.Rows`), and a torch DataLoader's workers make the batches, each whole (`Epoch`), in
  order: the very batches `batches` makes, for any number of workers.
- Augmentations (the plan's `augment = [...]`) apply to the field `x`, in order:
  the deterministic ones (`normalize`, `standardize`, `resize`, `center_crop`) on every batch, training
  or not; the random ones on training batches only (ops/augment.py defines them all).

Errors raise `DataError` (its `code` is E0508 for a file that cannot be read).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import catalog
from ..catalog import sources, text
from ..catalog.sources import DataError, Rows
from ..diagnostics import Diagnostic, DslcError, Label
from ..ir.dims import Sym, Var, requirements, unmet
from ..ops import augment as augmentations
from ..ops.registry import HELPERS


@dataclass
class Stream:
    """A split of a text read in order (truncated BPTT). Its tokens are cut into `batch_size`
    columns of n = N // batch_size tokens (column b holds tokens b·n ... b·n + n - 1, the rest
    dropped), and batch k is window k down every column: x = columns[:, k·c : k·c + c],
    y = columns[:, k·c + 1 : k·c + c + 1] for c = context. So example b of batch k+1 continues
    example b of batch k, and every batch is full; the ragged end of each column (fewer than
    c + 1 tokens left) is dropped."""
    tokens: torch.Tensor      # [N] int64
    context: int
    limit: int | None = None  # read only the first this many batches (smoke runs)

    def __len__(self) -> int:
        return len(self.tokens)

    def windows(self, batch_size: int) -> int:
        n = max(0, (len(self.tokens) // batch_size - 1) // self.context)
        return n if self.limit is None else min(n, self.limit)

    def batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """The batches in order; with `world` processes, the columns are those of a batch of
        batch_size·world, and process `rank` reads its own batch_size of them."""
        total = batch_size * world
        n, c = len(self.tokens) // total, self.context
        columns = self.tokens[:n * total].view(total, n)[rank * batch_size:(rank + 1) * batch_size]
        for k in range(self.windows(total)):
            yield {"x": columns[:, k * c:k * c + c].contiguous(), "y": columns[:, k * c + 1:k * c + c + 1].contiguous()}

    def to(self, device) -> "Stream":
        return Stream(self.tokens.to(device), self.context, self.limit)


@dataclass
class Splits:
    train: dict[str, torch.Tensor] | Stream     # field name -> tensor, first dim = examples
    val: dict[str, torch.Tensor] | Stream | None
    test: dict[str, torch.Tensor] | Stream | None
    meta: dict = field(default_factory=dict)    # classes, class_names, vocab, itos, sizes, ...


# ---------------------------------------------------------------------- loading and splitting

def split_indices(n: int, val: float, test: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) example indices. A non-zero fraction holds at least one example."""
    def count(frac: float) -> int:
        return 0 if frac <= 0 else max(1, round(n * frac))
    n_test, n_val = count(test), count(val)
    if n_test + n_val >= n:
        raise DataError(f"val = {val:g} and test = {test:g} of {n} examples leave nothing to train on", "E0302")
    perm = np.random.default_rng(int(seed) % 2**64).permutation(n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def load(name: str, args: dict, base_dir: str = ".", lazy: bool = False) -> Splits:
    """The data set `name` with the bound catalog `args` (defaults fill the rest; val, test and
    seed split it); relative paths are resolved against `base_dir`, the plan's folder. `lazy` (a plan
    with `workers`): an image folder's images, an .npz file's arrays and a CSV file's features stay on
    disk (`sources.Rows`) and are read a batch at a time; their examples and splits are the same."""
    entry = catalog.DATASETS.get(name)
    if entry is None:
        raise DataError(f"unknown data set `{name}`; data sets: {', '.join(catalog.DATASETS)}", "E0503")
    full = {p.name: p.default for p in entry.params if not p.required}
    full.update(args)
    missing = [p.name for p in entry.params if p.required and p.name not in full]
    if missing:
        raise DataError(f"`{name}` needs {', '.join(missing)}", "E0303")
    want = entry.field_types(full, base_dir)
    arrays, meta = text.text_set(full, base_dir) if name == "text" else sources.arrays(name, full, base_dir, lazy)
    arrays = {k: a.read(np.arange(len(a))) if isinstance(a, Rows) and len(a.shape) == 1 else a
              for k, a in arrays.items()}   # labels and other one-number fields: small, kept in memory
    limit = int(full["limit"]) if full.get("limit") is not None else None
    if "stream" in meta or "windows" in meta:
        tokens = arrays["tokens"][:limit] if limit is not None else arrays["tokens"]
        splits = _stream_splits(tokens, meta, float(full["val"]), float(full["test"]))
        return splits if "stream" in meta else _windowed(splits, int(meta["windows"]))
    labels = full.get("labels")
    if labels is not None:
        arrays, meta = _keep_labels(name, arrays, meta, [int(i) for i in labels])
    if limit is not None:
        arrays = _sample(arrays, limit, int(full["seed"]))
    n = len(next(iter(arrays.values())))
    for key, a in arrays.items():
        t = want.get(key)
        if t is None or str(a.dtype) != t.dtype or tuple(a.shape[1:]) != tuple(int(d) for d in t.shape[1:]):
            raise DataError(f"`{name}` gave the field `{key}` as {list(a.shape)} of {a.dtype}, not {t} as "
                            "checked: did its file change?")
    tensors = {k: a if isinstance(a, Rows) else torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
    parts = split_indices(n, float(full["val"]), float(full["test"]), int(full["seed"]))
    train, val, test = ({k: _take(t, torch.from_numpy(idx)) for k, t in tensors.items()} if len(idx) else None
                        for idx in parts)
    meta = dict(meta, name=name, examples=n, sizes={"train": len(parts[0]), "val": len(parts[1]),
                                                     "test": len(parts[2])})
    return Splits(train, val, test, meta)


def _sample(arrays: dict, limit: int, seed: int) -> dict:
    """`limit` examples drawn by `seed` (in the source's order), or all of them when there are fewer: a
    sample, not the first rows, since a file sorted by class would give one class."""
    n = len(next(iter(arrays.values())))
    if limit >= n:
        return arrays
    keep = np.sort(np.random.default_rng([int(seed) % 2**64, 1]).permutation(n)[:limit])
    return {k: _take(a, keep) for k, a in arrays.items()}


def _take(a, idx):
    """The examples `idx` (ints, or a mask of bools) of a field: a tensor's or array's copied, a `Rows`
    narrowed without reading anything."""
    if isinstance(a, Rows):
        idx = np.asarray(idx)
        return a.take(np.flatnonzero(idx) if idx.dtype == bool else idx)
    return a[idx]


def _stream_splits(tokens: np.ndarray, meta: dict, val: float, test: float) -> Splits:
    """A text's contiguous splits: training first, then validation, then test (its last tokens)."""
    n = len(tokens)

    def count(frac: float) -> int:
        return 0 if frac <= 0 else max(1, round(n * frac))
    n_val, n_test = count(val), count(test)
    if n_val + n_test >= n:
        raise DataError(f"val = {val:g} and test = {test:g} of {n} tokens leave nothing to train on", "E0302")
    t = torch.from_numpy(np.ascontiguousarray(tokens))
    ends = (n - n_val - n_test, n - n_test, n)
    parts = (t[:ends[0]], t[ends[0]:ends[1]], t[ends[1]:])
    context = int(meta["stream"] if "stream" in meta else meta["windows"])
    train, val_, test_ = (Stream(p.clone(), context) if len(p) else None for p in parts)
    sizes = {"train": ends[0], "val": n_val, "test": n_test}
    return Splits(train, val_, test_, dict(meta, examples=n, sizes=sizes))


def _windowed(splits: Splits, context: int) -> Splits:
    """Contiguous splits cut into non-overlapping windows of context + 1 tokens each (x the first
    context, y the next token of each); a split's ragged end is dropped."""
    def windows(split: Stream | None, name: str):
        if split is None:
            return None
        n = len(split.tokens) // (context + 1)
        if n == 0:
            raise DataError(f"the {name} split has {len(split.tokens)} tokens: no window of context + 1 = "
                            f"{context + 1} (lower `context`, or give that split a larger fraction)", "E0302")
        w = split.tokens[:n * (context + 1)].view(n, context + 1)
        return {"x": w[:, :-1].contiguous(), "y": w[:, 1:].contiguous()}
    train, val, test = windows(splits.train, "training"), windows(splits.val, "validation"), \
        windows(splits.test, "test")
    sizes = {k: len(v["x"]) if v is not None else 0 for k, v in (("train", train), ("val", val), ("test", test))}
    return Splits(train, val, test, dict(splits.meta, examples=sum(sizes.values()), sizes=sizes,
                                         tokens=splits.meta["sizes"]))


def _keep_labels(name: str, arrays: dict, meta: dict, labels: list[int]) -> tuple[dict, dict]:
    """Only the examples whose `y` is one of `labels` (in their order in the source; the ids
    are not renumbered, so a model keeps its outputs for all the set's classes)."""
    y = arrays.get("y")
    if y is None or y.dtype.kind not in "iu":
        raise DataError(f"`labels` of `{name}` keeps examples by class id, but this data set has no "
                        "class ids `y`", "E0302")
    classes = meta.get("classes")
    if classes is not None and any(i >= classes for i in labels):
        raise DataError(f"`labels` of `{name}` must be class ids from 0 to {classes - 1}, got {labels}", "E0302")
    keep = np.isin(y, labels)
    if not keep.any():
        raise DataError(f"no example of `{name}` has a label in {labels}", "E0302")
    return {k: _take(a, keep) for k, a in arrays.items()}, dict(meta, labels=list(labels))


# ---------------------------------------------------------------------- the models' run-time requirements

def check_requirements(plan, splits: Splits, batch_sizes: list[int]) -> None:
    """Refuse data too small for a run-time requirement of the plan's steps (`x[3]` on the batch
    needs B > 3) before training starts: every batch the run will feed is tried, each phase's
    `batch_size` and the last, partial batch of each split. The error points at the spec line
    that relies on the size, and at the plan's data."""
    _check_streams(splits, batch_sizes, plan.data.span)
    for step in plan.steps:
        if not requirements(step.graph.guards):
            continue
        for n, what in sorted(_batch_counts(splits, batch_sizes)):
            sizes = _sizes(step.graph, splits.train, n)
            bad = unmet(step.graph.guards, sizes.get)
            if bad:
                raise DslcError(_unmet(bad[0], sizes, what, plan.data.span))


def _check_streams(splits: Splits, batch_sizes: list[int], data_span) -> None:
    """Each split read as a stream must fill at least one batch of every batch size."""
    for name, split in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        for bs in batch_sizes:
            if isinstance(split, Stream) and split.windows(bs) == 0:
                need = bs * (split.context + 1)
                raise DslcError(Diagnostic(
                    "E0504", f"the {name} split ({len(split)} tokens) makes no batch of {bs} columns of "
                    f"context + 1 = {split.context + 1} tokens", data_span, label=f"needs {need} tokens",
                    help="give the split more text (`chars`, `val`, `test`) or lower `batch_size` or `context`"))


def _batch_counts(splits: Splits, batch_sizes: list[int]) -> set:
    """(examples, which batch) of every batch size a run over these splits feeds."""
    out = set()
    for name, split in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        if isinstance(split, Stream):   # every batch of a stream is full
            out.update((bs, f"a batch of `batch_size = {bs}`") for bs in batch_sizes)
            continue
        n = _length(split) if split else 0
        for bs in batch_sizes:
            if n >= bs:
                out.add((bs, f"a batch of `batch_size = {bs}`"))
            if n % bs:
                out.add((n % bs, f"the last batch of the {name} split ({n} examples, batch_size {bs})"))
    return out


def _sizes(graph, split: dict, n: int) -> dict:
    """Var -> value of the run-time sizes in a step's batch fields: `n` examples, the rest as in the data."""
    sizes = {}
    for name, ref in graph.inputs:
        field_ = name[len("batch_"):]
        for i, d in enumerate(graph.type_of(ref).shape):
            atom = d.poly.single_atom() if isinstance(d, Sym) else None
            if isinstance(atom, Var) and isinstance(split, Stream) and field_ in ("x", "y"):
                sizes.setdefault(atom, n if i == 0 else split.context)
            elif isinstance(atom, Var) and isinstance(split, dict) and field_ in split:
                sizes.setdefault(atom, n if i == 0 else int(split[field_].shape[i]))
    return sizes


def _unmet(g, sizes: dict, what: str, data_span) -> Diagnostic:
    got = ", ".join(f"{a.name} = {v}" for a, v in sorted(sizes.items(), key=lambda t: t[0].name)
                    if a in g.atoms())
    need = g.to_python()
    span = g.where if g.where is not None else data_span
    return Diagnostic("E0504", f"the data is too small for this model: it needs {need}, but {what} has {got}",
                      span, label=f"needs {need}", labels=(Label(data_span, "the data"),) if span is not data_span else (),
                      help="choose `batch_size` and the splits so that every batch meets it, or change the spec")


# ---------------------------------------------------------------------- batches

def _length(split: dict) -> int:
    return len(next(iter(split.values())))


def floating(field) -> bool:
    """Whether a field holds floats (a tensor, or `Rows` read from disk)."""
    return field.dtype.kind == "f" if isinstance(field, Rows) else torch.is_floating_point(field)


def examples(split: dict | Stream) -> int:
    """How many examples a split holds (a stream: its tokens)."""
    return len(split) if isinstance(split, Stream) else _length(split)


def first_batches(split: dict | Stream | None, batch_size: int, n: int):
    """The first `n` batches of a split, in its order (the smoke runs' data)."""
    if split is None:
        return None
    if isinstance(split, Stream):
        return Stream(split.tokens, split.context, n)
    return {f: _take(t, np.arange(min(n * batch_size, len(t)))) if isinstance(t, Rows) else t[:n * batch_size]
            for f, t in split.items()}


def steps_per_epoch(split: dict | Stream, batch_size: int, world: int = 1) -> int:
    """Batches in one pass over `split` (the last, partial one included; a stream's are all full).
    With `world` processes, a step takes batch_size examples in each; a last batch too small to
    give each process one example is left out."""
    if isinstance(split, Stream):
        return split.windows(batch_size * world)
    n, total = _length(split), batch_size * world
    return n // total + (1 if n % total >= world else 0)


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from integers such as (seed, epoch, batch)."""
    state = np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def batches(split: dict, batch_size: int, *, shuffle: bool, seed: int, epoch: int, augment: list | None = None,
            train: bool = True, rank: int = 0, world: int = 1, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of one epoch: a permutation seeded by (seed, epoch) when `shuffle`, else
    the split's order; batch k's augmentation draws from a generator seeded by
    (seed, epoch, k + 1). `train=False` applies only the deterministic ones. A `Stream` is read in order
    (not shuffled; its int64 `x` takes no augmentation). `start`: from batch `start` on (a resumed
    epoch), the ones before it never made.

    With `world` processes, the order is the same and batch k is the one a single process
    would take with batch_size·world, cut in `world` consecutive pieces (sizes differing by at
    most one): process `rank` gets piece `rank`, augmented as in that whole batch. So N
    processes of batch B see, step by step, the examples one process of batch N·B sees."""
    if isinstance(split, Stream):
        return itertools.islice(split.batches(batch_size, rank, world), start, None)
    epoch_ = Epoch(split, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, augment=augment, train=train,
                   rank=rank, world=world)
    # an iterator, not a generator: a batch of a small model takes a millisecond, and each generator
    # between the trainer's loop and Epoch costs a resumption a batch
    return map(epoch_.__getitem__, range(start, len(epoch_)))


class Epoch(torch.utils.data.Dataset):
    """The batches of one epoch of a split, batch k made on demand (`epoch[k]`) as `batches` makes it:
    so a DataLoader's worker processes make the very batches one process makes, whatever their number."""

    def __init__(self, split: dict, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                 augment: list | None = None, train: bool = True, rank: int = 0, world: int = 1):
        self.split, self.seed, self.epoch, self.rank, self.world = split, seed, epoch, rank, world
        n = _length(split)
        device = _device(split)
        order = torch.randperm(n, generator=generator(seed, epoch, 0)).to(device) if shuffle else \
            torch.arange(n, device=device)
        self.calls = _calls(augment)   # apply_batch leaves out the random ones off training
        self.train = train
        self.random = train and any(augmentations.AUGMENTATIONS[name].random for name, _ in self.calls)
        # batch k: the examples order[k·size:(k + 1)·size], a view made when the batch is (making all
        # of them here, as `split` does, took longer than the views a batch at a time)
        self.order, self.size = order, batch_size * world
        self.count = -(-n // self.size)
        if n % self.size and n % self.size < world:
            self.count -= 1   # too few to give each process one (steps_per_epoch leaves it out)
        # one process, no augmentation, every field in memory: a batch is the rows, nothing more
        self.plain = world == 1 and not self.calls and all(isinstance(t, torch.Tensor) for t in split.values())

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if not 0 <= k < self.count:
            raise IndexError(f"batch {k} of an epoch of {self.count}")
        idx = self.order[k * self.size:(k + 1) * self.size]
        if self.plain:
            return {f: t[idx] for f, t in self.split.items()}
        # one process takes the whole batch; several each take their piece, cut after a random augmentation
        piece = _piece(len(idx), self.rank, self.world) if self.world > 1 else None
        rows = idx[piece] if piece is not None and not self.random else idx
        batch = {f: _rows(t, rows) for f, t in self.split.items()}
        if self.calls and "x" in batch:
            g = generator(self.seed, self.epoch, k + 1) if self.random else None
            batch = apply_batch(batch, self.calls, g, self.train)
        if self.random and piece is not None:   # augmented whole, so each example gets the draw it gets in one process
            batch = {f: t[piece] for f, t in batch.items()}
        return batch


def _rows(t, idx: torch.Tensor) -> torch.Tensor:
    """The examples `idx` of a field: indexed in memory, or read (`Rows`)."""
    if isinstance(t, Rows):
        return torch.from_numpy(t.read(idx.numpy()))
    return t[idx]


def _device(split: dict) -> torch.device:
    return next((t.device for t in split.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))


class _Failed:
    """A DataError met in a worker process, carried to the main one as a value (DataLoader would
    re-raise it with the worker's traceback in its message)."""

    def __init__(self, error: DataError):
        self.message, self.code = error.message, error.code


class _Guarded(torch.utils.data.Dataset):
    def __init__(self, epoch: Epoch):
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.epoch)

    def __getitem__(self, k: int):
        try:
            return self.epoch[k]
        except DataError as e:
            return _Failed(e)


def loader(split, batch_size: int, *, workers: int | None, pin_memory: bool = False, start: int = 0,
           **how) -> Iterator[dict[str, torch.Tensor]]:
    """The batches `batches(split, batch_size, start=start, **how)` makes, made by a
    torch.utils.data.DataLoader with `workers` processes (0: in this one) when the plan sets `workers`
    (None: made here, as before). Each batch is made whole by one worker (`Epoch`), read from disk
    and augmented there, and the loader hands them back in order: the same batches for any number of
    workers. `pin_memory`: page-locked, for fast copies to a GPU."""
    if workers is None or isinstance(split, Stream):
        return batches(split, batch_size, start=start, **how)
    return _workers_batches(Epoch(split, batch_size, **how), start, workers, pin_memory)


def _workers_batches(epoch: Epoch, start: int, workers: int, pin_memory: bool) -> Iterator[dict[str, torch.Tensor]]:
    """`loader`'s batches from batch `start` on, made by a DataLoader's `workers` processes."""
    if start >= len(epoch):
        return
    # its own generator: a DataLoader draws its workers' base seed, which would otherwise come from torch's
    # global one and shift the run's dropout (the batches draw from their own generators, not from it)
    made = torch.utils.data.DataLoader(_Guarded(epoch), batch_size=None, sampler=range(start, len(epoch)),
                                       num_workers=workers, pin_memory=pin_memory,
                                       generator=generator(epoch.seed, epoch.epoch, -1))
    for batch in made:
        if isinstance(batch, _Failed):
            raise DataError(batch.message, batch.code)
        yield batch


def _piece(n: int, rank: int, world: int) -> slice:
    """Process `rank`'s consecutive share of n examples (as numpy's array_split cuts them)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (1 if rank < extra else 0))


# ---------------------------------------------------------------------- augmentation

def _calls(augment) -> list[tuple[str, dict]]:
    """(name, args) of each augmentation: plan calls (`.entry.name`, `.args`) or pairs."""
    out = []
    for c in augment or ():
        if hasattr(c, "entry"):
            out.append((c.entry.name, dict(c.args)))
        else:
            name, args = c
            out.append((name, dict(args)))
    return out


_HELPERS: dict = {}


def helper(name: str):
    """The function `augment_<name>` that generated code defines too (ops/augment.py), run here."""
    if not _HELPERS:
        scope = {"torch": torch, "F": F}
        for key, h in HELPERS.items():
            if key.startswith("augment_"):
                exec(compile(h.source, f"<helper {key}>", "exec"), scope)   # noqa: S102 - dslc's own source
        _HELPERS.update({k: v for k, v in scope.items() if k.startswith("augment_")})
    return _HELPERS[f"augment_{name}"]


CLASS_IDS = "y.class_ids"   # a batch's own class ids, kept beside `y` made soft targets by mixup or cutmix


def apply_batch(batch: dict, calls, generator: torch.Generator | None = None, train: bool = True) -> dict:
    """The batch with `calls` applied in order to its `x` (never in place): the random ones only when
    `train`. Random draws come from `generator` (CPU; None: torch's default generator), each
    augmentation drawing in turn. With `mixup` or `cutmix`, `y` (class ids) becomes one-hot soft
    targets (mixed while training) and the ids stay under CLASS_IDS, for the metrics."""
    calls = _calls(calls)
    out = dict(batch)
    x, y = out["x"], None
    mixing = [args for name, args in calls if augmentations.AUGMENTATIONS[name].labels]
    if mixing:
        classes = mixing[0].get("classes")
        if "y" not in out or classes is None:
            raise DataError("`mixup` and `cutmix` need the class ids `y` and the number of classes", "E0302")
        out[CLASS_IDS] = out["y"]
        y = F.one_hot(out["y"].long(), int(classes)).to(torch.float32)
    for name, args in calls:
        aug = augmentations.AUGMENTATIONS.get(name)
        if aug is None:
            raise DataError(f"unknown augmentation `{name}`", "E0301")
        if aug.random and not train:
            continue
        if name in ("standardize", "normalize"):
            if "mean" not in args:
                raise DataError("`standardize` has no figures: the training split's are measured when a run "
                                "starts (`resolved`)", "E0302")
            x = normalize(x, args["mean"], args["std"])
        elif aug.labels:
            x, y = helper(name)(x, y, float(args.get("alpha", 1.0)), generator=generator)
        else:
            x = helper(name)(x, **augmentations.make(name, args).kwargs, generator=generator)
    out["x"] = x
    if y is not None:
        out["y"] = y
    return out


def apply_augment(x: torch.Tensor, calls, generator: torch.Generator | None = None,
                  train: bool = True) -> torch.Tensor:
    """`calls` applied in order to the batch `x` alone (`apply_batch`)."""
    return apply_batch({"x": x}, calls, generator, train)["x"]


def resolved(augment, train: dict | Stream | None, stats: dict | None = None,
             classes: int | None = None) -> list[tuple[str, dict]]:
    """The plan's augmentations with what they need from the data: `standardize` its figures (`stats`,
    {"mean", "std"}: a run's stored ones; else those of the training split's `x`, `channel_stats`), and
    `mixup` and `cutmix` the number of classes when the plan did not give it (`classes`)."""
    out = []
    for name, args in _calls(augment):
        if name == "standardize":
            if stats is None:
                stats = channel_stats(train["x"])
            args = dict(stats)
        elif augmentations.AUGMENTATIONS[name].labels and args.get("classes") is None:
            args = dict(args, classes=classes)
        out.append((name, args))
    return out


def channel_stats(x: torch.Tensor | Rows) -> dict:
    """Each channel's (dim 1's) mean and standard deviation (numpy's: ddof 0) over all the
    examples and positions, in float64; a channel that never varies gets 1, so it is only shifted.
    `Rows` are read a slice at a time (`_streamed_stats`), never whole."""
    if isinstance(x, Rows):
        mean, std = _streamed_stats(x)
    else:
        a = x.detach().to("cpu", torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
        mean, std = a.mean(1), a.std(1, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


STATS_ROWS = 1024   # examples read at a time when measuring `standardize`'s figures of `Rows`


def _streamed_stats(rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (ddof 0) of `Rows`, slice by slice: each slice's mean and sum of
    squared deviations merged into the running ones (Chan et al.'s pairwise update), in float64."""
    count, mean, m2 = 0, torch.zeros(rows.shape[1], dtype=torch.float64), torch.zeros(rows.shape[1], dtype=torch.float64)
    for start in range(0, len(rows), STATS_ROWS):
        x = torch.from_numpy(rows.read(np.arange(start, min(start + STATS_ROWS, len(rows)))))
        a = x.to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
        n, m = a.shape[1], a.mean(1)
        delta, total = m - mean, count + n
        mean = mean + delta * n / total
        m2 = m2 + ((a - m[:, None]) ** 2).sum(1) + delta ** 2 * count * n / total
        count = total
    return mean, (m2 / count).sqrt()


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std along dim 1 (channels; features of [B, F])."""
    mean, std = list(mean), list(std)
    c = x.shape[1]
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise DataError(f"normalize has {len(mean)} means and {len(std)} stds for {c} channels", "E0302")
    return helper("normalize")(x, mean, std)


def random_flip(x: torch.Tensor, p: float, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each example flipped along `dim` (a dimension of the batch, not 0) with probability p."""
    return helper("random_flip")(x, p, dim, generator=generator)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad H and W by `padding`, then crop each example back to H×W at a random offset."""
    return helper("random_crop")(x, padding, generator=generator)


def rotation(x: torch.Tensor, degrees: float, generator: torch.Generator | None) -> torch.Tensor:
    """Rotate each example about its centre by an angle drawn from [-degrees, degrees] (bilinear)."""
    return helper("rotation")(x, degrees, generator=generator)


__all__ = ["DataError", "Epoch", "Splits", "Stream", "apply_augment", "batches", "floating",
           "loader", "examples", "first_batches", "generator", "load",
           "channel_stats", "helper", "normalize", "random_crop", "random_flip", "rotation", "split_indices",
           "resolved", "steps_per_epoch", "apply_batch", "CLASS_IDS"]
