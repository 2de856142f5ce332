"""Data that streams (issue #17 item 3): with the plan field `workers`, an image folder and an .npz
file are read from disk a batch at a time by torch's DataLoader, augmented in its workers, and the
batches are the very ones the in-memory path makes, for any number of workers.

The references are independent of the loader: the in-memory path (the whole folder decoded by
Pillow, the whole .npz read by numpy) and numpy's own statistics."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train import MODELS, metrics, same, weights, write

import dslc
from dslc.api import train
from dslc.catalog import sources
from dslc.diagnostics import DslcError
from dslc.runtime import data
from dslc.runtime.callbacks import Callback
from dslc.runtime.rundir import RunDir
from dslc.runtime.safety import Interrupted, SignalStop
from dslc.runtime.trainer import Options, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this checkout's dslc, in subprocesses too


def image_folder(root, n: int, size: int = 8, channels: int = 1, distinct: int | None = None, seed: int = 0):
    """`n` PNGs in two class folders. With `distinct`, only that many are encoded and the rest are
    hard links to them (each still a file the loader opens and decodes): a large folder made fast."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    made = []
    for i in range(n):
        path = root / f"c{i % 2}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if distinct is not None and i >= distinct:
            os.link(made[i % distinct], path)
            continue
        a = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        Image.fromarray(a[..., 0] if channels == 1 else a).save(path)
        made.append(path)
    return root


def args(folder, **more) -> dict:
    return {"folder": str(folder), "channels": 1, "val": 0.2, "test": 0.1, "seed": 3, **more}


AUGMENT = [("random_flip", {}), ("random_crop", {"padding": 1}), ("normalize", {"mean": [0.5], "std": [0.25]})]


def epoch(split, workers, **how):
    kw = dict(shuffle=True, seed=7, epoch=2, augment=AUGMENT, train=True, **how)
    return list(data.loader(split, 16, workers=workers, **kw))


def equal_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_an_image_folder_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "img", 200)
    decoded = []
    real = sources._image
    monkeypatch.setattr(sources, "_image", lambda *a: decoded.append(a[1]) or real(*a))
    lazy = data.load("images", args(folder), lazy=True)
    assert isinstance(lazy.train["x"], sources.Rows) and len(decoded) == 0   # nothing decoded to split it
    first = next(data.loader(lazy.train, 16, workers=0, shuffle=True, seed=7, epoch=2))
    assert len(decoded) == 16 and first["x"].shape == (16, 1, 8, 8)
    whole = data.load("images", args(folder))   # Pillow decodes every image, in memory
    assert len(decoded) == 16 + 200
    assert lazy.meta["sizes"] == whole.meta["sizes"] and torch.equal(lazy.train["y"], whole.train["y"])
    reference = list(data.batches(whole.train, 16, shuffle=True, seed=7, epoch=2, augment=AUGMENT))
    assert equal_batches(epoch(lazy.train, 0), reference)
    assert equal_batches(epoch(lazy.train, 2), reference)                     # workers change nothing
    assert equal_batches(epoch(lazy.train, 2, start=5), reference[5:])        # a resumed epoch
    two = [epoch(lazy.train, 2, rank=r, world=2) for r in (0, 1)]             # data-parallel shards
    assert equal_batches(two[1], list(data.batches(whole.train, 16, shuffle=True, seed=7, epoch=2,
                                                   augment=AUGMENT, rank=1, world=2)))
    monkeypatch.setattr(data, "STATS_ROWS", 16)   # `standardize`'s figures merged from slices of 16 images
    stats, x = data.channel_stats(lazy.train["x"]), whole.train["x"].numpy().astype(np.float64)
    assert stats["mean"] == pytest.approx([x.mean()], rel=1e-12) and stats["std"] == pytest.approx([x.std()], rel=1e-12)


def test_an_npz_file_is_memory_mapped_and_read_as_numpy_reads_it(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 3, 4, 4)), rng.integers(0, 5, 300).astype(np.int32)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "b.npz", x=x, y=y)
    for name in ("a.npz", "b.npz"):
        lazy = data.load("npz", {"path": str(tmp_path / name), "val": 0.1, "test": 0.1, "seed": 1, "limit": 250},
                         lazy=True)
        whole = data.load("npz", {"path": str(tmp_path / name), "val": 0.1, "test": 0.1, "seed": 1, "limit": 250})
        rows = lazy.train["x"]
        assert isinstance(rows, sources.MappedRows) and lazy.train["y"].dtype == torch.int64
        assert isinstance(rows.array, np.memmap) == (name == "a.npz")           # stored: mapped, not read
        assert equal_batches(epoch(lazy.val, 2), list(data.batches(whole.val, 16, shuffle=True, seed=7, epoch=2,
                                                                   augment=AUGMENT)))
    x[123, 1, 2, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(data.DataError, match=r"holds inf at \[123, 1, 2, 0\], in example 123"):
        data.load("npz", {"path": str(tmp_path / "bad.npz")}, lazy=True)


@pytest.mark.parametrize("target", ["label", "id", "value"])
def test_a_csv_file_is_parsed_once_into_a_mapped_file(tmp_path, monkeypatch, target):
    monkeypatch.setattr(sources, "CSV_CHUNK", 7)   # several chunks, the last one partial
    rng = np.random.default_rng(0)
    lines = ["a,name,b,label,id,value"]
    for i in range(60):
        lines.append(f"{rng.normal():.6f},n{i},{rng.integers(-9, 9)},{'cat' if i % 3 else 'dog'},"
                     f"{['1', '01', '7'][i % 3]},{rng.normal():.9f}")
        if i == 30:
            lines.append(",,,,,")   # an empty row: skipped by both
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    bound = {"path": str(tmp_path / "t.csv"), "target": target, "val": 0.2, "test": 0.1, "seed": 2}
    lazy, whole = data.load("csv", bound, lazy=True), data.load("csv", bound)
    assert isinstance(lazy.train["x"], sources.MappedRows) and isinstance(lazy.train["x"].array, np.memmap)
    assert lazy.meta == whole.meta and torch.equal(lazy.train["y"], whole.train["y"])
    assert equal_batches(list(data.loader(lazy.train, 8, workers=2, shuffle=True, seed=1, epoch=1)),
                         list(data.batches(whole.train, 8, shuffle=True, seed=1, epoch=1)))
    if target == "id":   # 1 and 01 are one class
        assert whole.meta["class_names"] == ["1", "7"]


PLAN = MODELS + """
train p {
    model      = Small()
    data       = images("img", channels=1, val=0.2, test=0.1)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=3e-3)
    epochs     = 2
    batch_size = 16
    metrics    = [accuracy]
    augment    = [random_flip(), random_crop(padding=1)]
    seed       = 0
}
"""


@pytest.fixture
def no_plots(monkeypatch):
    """The runs' PNGs left out: matplotlib takes most of a tiny run's time, and they are not what is tested."""
    monkeypatch.setattr(RunDir, "curves", lambda *a, **k: None)
    monkeypatch.setattr(RunDir, "confusion", lambda *a, **k: None)


def _run(tmp_path, out, sets=(), **opts):
    options = Options(out=str(tmp_path / out), sets=tuple(sets), progress=False, watch=False, **opts)
    return train(write(tmp_path, PLAN), None, options, out=lambda s: None)


@pytest.mark.slow
def test_the_same_run_with_no_workers_0_or_2(tmp_path, no_plots):
    """workers = 0 and 2 (through --set) train exactly what the in-memory run (no `workers`) trains."""
    image_folder(tmp_path / "img", 160)
    for out, sets in (("memory", ()), ("w0", ("workers=0",)), ("w2", ("workers=2",))):
        _run(tmp_path, out, sets)
    for out in ("w0", "w2"):
        assert _without_time(metrics(tmp_path / out)) == _without_time(metrics(tmp_path / "memory"))
        assert same(weights(tmp_path / out), weights(tmp_path / "memory"))


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


class StopAt(Callback):
    """Asks the run to stop (as Ctrl-C does) at batch `batch` of epoch `epoch`."""
    def __init__(self, epoch: int, batch: int):
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, batch):
        if (trainer.epoch, batch) == self.at:
            next(c for c in trainer.callbacks.items if isinstance(c, SignalStop)).requested = True


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_with_2_workers_resumes_exactly(tmp_path, no_plots):
    image_folder(tmp_path / "img", 160)
    text = PLAN.replace("    seed       = 0", "    seed       = 0\n    workers    = 2")
    _run(tmp_path, "whole")
    path = write(tmp_path, text)
    stopped = Trainer(dslc.load(path).plan("p"), path, Options(out=str(tmp_path / "r"), progress=False, watch=False),
                      lambda s: None)
    stopped.callbacks.items.insert(0, StopAt(2, 3))
    with pytest.raises(Interrupted):
        stopped.run()
    assert any("-batch-" in n for n in os.listdir(tmp_path / "r" / "checkpoints"))
    # resumed in the training process: how many workers read the data changes no batch, so it may differ
    train(path, None, Options(out=str(tmp_path / "r"), resume=True, sets=("workers=0",), progress=False, watch=False),
          out=lambda s: None)
    assert same(weights(tmp_path / "r"), weights(tmp_path / "whole"))
    assert _without_time(metrics(tmp_path / "r")) == _without_time(metrics(tmp_path / "whole"))


def test_an_image_that_cannot_be_read_mid_run_is_a_diagnostic(tmp_path, no_plots):
    image_folder(tmp_path / "img", 60)
    (tmp_path / "img" / "c1" / "000031.png").write_bytes(b"not a png")
    with pytest.raises(DslcError) as e:
        _run(tmp_path, "bad", ("workers=2",))
    assert e.value.codes == ["E0508"] and "cannot read image" in str(e.value) and "000031.png" in str(e.value)
    assert "Traceback" not in str(e.value)


def _peak_rss_mib(cmd: list, cwd) -> float:
    """The peak resident memory of `cmd` and its worker processes (the largest of them), in MiB: a
    fresh Python runs it, so the figure is this command's alone."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    path = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path), timeout=300)
    code, kib = out.stdout.split()[-2:]
    assert code == "0", out.stderr
    return int(kib) / 1024


RSS_PLAN = """
model Tiny {
    input x: [B, 3, 32, 32]
    Flatten()
    Linear(2)
}

train p {
    model           = Tiny()
    data            = images("img", val=0, test=0)
    loss            = cross_entropy(out, batch.y)
    optimizer       = SGD(lr=0.1)
    epochs          = 1
    batch_size      = 32
    overfit_batches = 2
    workers         = 2
}
"""


@pytest.mark.slow
def test_memory_stays_flat_as_the_image_folder_grows(tmp_path):
    """2,000 and 20,000 images of 32×32 RGB: held in memory as float32 the second would take
    ~220 MiB more (20,000 · 12 KiB); streamed, the peak RSS grows by far less than that."""
    peaks = {}
    for n in (2_000, 20_000):
        root = tmp_path / str(n)
        image_folder(root / "img", n, size=32, channels=3, distinct=500)
        (root / "plan.dl").write_text(RSS_PLAN)
        peaks[n] = _peak_rss_mib([sys.executable, "-m", "dslc", "train", "plan.dl", "--out", "run", "--watch", "off"], root)
    in_memory = 18_000 * 3 * 32 * 32 * 4 / 2**20
    assert peaks[20_000] - peaks[2_000] < 40 < in_memory / 4, peaks
