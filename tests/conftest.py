"""Shared test set-up: single-threaded torch (many times faster for small models here)."""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

_COMMON = dict(max_examples=25, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dslc", **_COMMON)
# CI is reproducible (the same examples every run); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.load_profile("ci" if os.environ.get("CI") else "dslc")


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """A fresh data-set cache directory for one test module: the tests never write under the user's home."""
    old = os.environ.get("DSLC_CACHE")
    path = str(tmp_path_factory.mktemp("cache"))
    os.environ["DSLC_CACHE"] = path
    yield path
    if old is None:
        del os.environ["DSLC_CACHE"]
    else:
        os.environ["DSLC_CACHE"] = old


@pytest.fixture
def no_figures(monkeypatch):
    """A run without curves.png and confusion.png: drawing them takes most of a small run's time.
    For test files that are not about them (tests/test_train.py, test_predict.py, test_smoke_runs.py
    and test_examples.py draw them)."""
    from dslc.runtime.rundir import RunDir
    monkeypatch.setattr(RunDir, "curves", lambda self, history: None)
    monkeypatch.setattr(RunDir, "confusion", lambda self, matrix, names=None, file="confusion.png": None)


def pytest_configure(config):
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite golden files (generated code, IR, diagnostics) instead of comparing")


import pytest  # noqa: E402


@pytest.fixture
def update_goldens(request) -> bool:
    return request.config.getoption("--update-goldens")


def golden(path, text: str, update: bool) -> None:
    """Compare `text` with the golden file at `path` (or rewrite it with --update-goldens)."""
    import pathlib
    path = pathlib.Path(path)
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not update:
            pytest.fail(f"golden file {path} was missing and has been written; review it and rerun")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path} (review, then --update-goldens)"
