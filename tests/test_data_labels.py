"""`labels=[...]` of the classification data sets: keep only the examples of some classes
(before splitting, ids unchanged), checked statically and reproducibly split."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dslc import catalog
from dslc.catalog.sources import DataError
from dslc.cli import main
from dslc.runtime import data

pytestmark = pytest.mark.usefixtures("data_cache")  # a fresh data-set cache (tests/conftest.py)


def labels_of(s: data.Splits) -> set:
    return {int(v) for part in (s.train, s.val, s.test) if part is not None for v in part["y"]}


def test_only_the_listed_labels_are_kept_with_their_own_ids():
    from sklearn.datasets import load_digits
    y = load_digits().target
    s = data.load("digits", {"labels": [5, 6, 7, 8, 9], "val": 0.15, "test": 0.15})
    n = int(np.isin(y, [5, 6, 7, 8, 9]).sum())
    assert labels_of(s) == {5, 6, 7, 8, 9}                 # not renumbered to 0..4
    assert s.meta["examples"] == n and s.meta["classes"] == 10 and s.meta["labels"] == [5, 6, 7, 8, 9]
    # the split is that of a data set of n examples
    train, val, test = data.split_indices(n, 0.15, 0.15, 0)
    assert s.meta["sizes"] == {"train": len(train), "val": len(val), "test": len(test)}
    assert len(s.train["y"]) + len(s.val["y"]) + len(s.test["y"]) == n
    assert len(s.test["y"]) == round(n * 0.15) and len(s.val["y"]) == round(n * 0.15)


def test_the_kept_examples_are_the_sources_in_split_order():
    from sklearn.datasets import load_iris
    ref = load_iris()
    s = data.load("iris", {"labels": [0, 2], "seed": 4, "val": 0.2})
    keep = np.isin(ref.target, [0, 2])          # filtered in the source's order, then split
    x, y = ref.data[keep].astype(np.float32), ref.target[keep]
    train, val, _ = data.split_indices(len(y), 0.2, 0.0, 4)
    np.testing.assert_array_equal(s.train["x"].numpy(), x[train])
    np.testing.assert_array_equal(s.val["y"].numpy(), y[val])


def test_the_split_is_reproducible_and_depends_on_the_seed():
    a = data.load("mnist", {"labels": [0, 1], "val": 0.1, "test": 0.1, "seed": 3})
    b = data.load("mnist", {"labels": [0, 1], "val": 0.1, "test": 0.1, "seed": 3})
    c = data.load("mnist", {"labels": [0, 1], "val": 0.1, "test": 0.1, "seed": 4})
    for part in ("train", "val", "test"):
        for key in ("x", "y"):
            assert np.array_equal(getattr(a, part)[key].numpy(), getattr(b, part)[key].numpy())
    assert a.meta["sizes"] == {"train": 800, "val": 100, "test": 100}     # 500 images of each digit
    assert labels_of(a) == {0, 1}
    assert not np.array_equal(a.test["x"].numpy(), c.test["x"].numpy())


def test_labels_split_the_data_set_into_disjoint_parts():
    low = data.load("digits", {"labels": [0, 1, 2, 3, 4]})
    high = data.load("digits", {"labels": [5, 6, 7, 8, 9]})
    assert len(low.train["y"]) + len(high.train["y"]) == 1797
    assert labels_of(low) == {0, 1, 2, 3, 4} and labels_of(high) == {5, 6, 7, 8, 9}


def test_without_labels_nothing_changes():
    a, b = data.load("wine", {"val": 0.2}), data.load("wine", {"val": 0.2, "labels": None})
    assert np.array_equal(a.train["x"].numpy(), b.train["x"].numpy()) and "labels" not in a.meta


def test_image_folders_take_labels(tmp_path):
    from PIL import Image
    for k, name in enumerate(("cat", "dog", "owl")):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((4, 4), 40 * k + i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    s = data.load("images", {"folder": str(tmp_path), "channels": 1, "labels": [2]})
    assert labels_of(s) == {2} and len(s.train["y"]) == 3
    with pytest.raises(DataError, match="from 0 to 2"):
        data.load("images", {"folder": str(tmp_path), "channels": 1, "labels": [3]})


@pytest.mark.parametrize("name", ["digits", "mnist", "iris", "wine", "breast_cancer", "images"])
def test_the_classification_sets_declare_labels(name):
    assert "labels" in {p.name for p in catalog.DATASETS[name].params}


@pytest.mark.parametrize("name", ["diabetes", "shakespeare", "csv", "npz"])
def test_other_sets_do_not(name):
    assert "labels" not in {p.name for p in catalog.DATASETS[name].params}


PLAN = """
model Small {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(10)
}
train p {
    model = Small()
    data = digits(labels=LABELS)
    loss = cross_entropy(out, batch.y)
    optimizer = Adam()
    epochs = 1
}
"""


@pytest.mark.parametrize("labels,problem", [("[0, 10]", "must be class ids from 0 to 9"),
                                            ("[]", "must list at least one class id"),
                                            ("[3, 3]", "must not list a class id twice"),
                                            ("[-1]", "must be class ids from 0 to 9"),
                                            ("[0.5]", "expects")])
def test_dslc_check_rejects_bad_labels(tmp_path, labels, problem):
    path = tmp_path / "p.dl"
    path.write_text(PLAN.replace("LABELS", labels))
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 1 and problem in r.output and "`labels` of `digits`" in r.output


def test_dslc_check_accepts_labels(tmp_path):
    path = tmp_path / "p.dl"
    path.write_text(PLAN.replace("LABELS", "[0, 1, 2, 3, 4]"))
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 0, r.output
