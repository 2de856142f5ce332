"""The training examples (examples/*/*.dl, issue #5): every file checks, every plan runs a
short version of itself (one epoch per phase, on a small slice of its data), and every
plan's command is in its folder's README. A plan whose `init` names another plan's run
(`runs/PLAN/checkpoints/best.safetensors`) runs that plan first, and takes its weights
through `--set init=...`.

examples/language.dl, the language contract's examples, is tested by test_language.py."""
from __future__ import annotations

import glob
import json
import os
import re

import pytest
from click.testing import CliRunner

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.runtime.trainer import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "*.dl")))

# The short version: each data set cut to a slice that trains in well under a second.
SMALL = {
    "mnist": ("data.labels=[0, 1]",),          # 1,000 of the 5,000 images
    "shakespeare": ("data.chars=2000",),        # 30 windows of 65 characters
    "shakespeare:stream": ("data.chars=20000",),  # each 5% split fills a batch of 20 rows of 36 characters
    "reverse": ("data.n=500",),                 # 400 sequences to train on
}
INIT = re.compile(r"^runs/([A-Za-z_][A-Za-z0-9_]*)/checkpoints/best\.safetensors$")


pytestmark = pytest.mark.usefixtures("data_cache")  # a fresh data-set cache (tests/conftest.py)


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def plans() -> list:
    out = []
    for path in FILES:
        out += [pytest.param(path, name, id=f"{rel(path)}:{name}") for name in dslc.load(path).plans]
    return out


PLANS = plans()


def short(plan) -> list[str]:
    """--set values for a one-epoch (per phase) run of `plan` on a small slice of its data."""
    sets = [f"{p.name}.epochs=1" for p in plan.phases] or ["epochs=1"]
    stream = ":stream" if plan.data.args.get("stream") else ""
    return sets + list(SMALL.get(plan.data.entry.name + stream, ()))


def prerequisites(plan) -> dict:
    """{model key or None: the plan whose run `init` names} ({None: p} for a single file)."""
    init = plan.fields.get("init")
    if not init:
        return {}
    items = init.items() if isinstance(init, dict) else [(None, init)]
    out = {}
    for key, file in items:
        m = INIT.match(str(file))
        assert m, f"`init` of `{plan.name}` should name another plan's run: runs/PLAN/checkpoints/best.safetensors"
        out[key] = m.group(1)
    return out


def run_short(path: str, name: str, out_dir, extra=()) -> tuple[dict, list]:
    plan = dslc.load(path).plan(name)
    lines: list = []
    options = Options(out=str(out_dir), sets=tuple(short(plan)) + tuple(extra), progress=False)
    return train(path, name, options, out=lines.append), lines


def test_there_are_examples():
    folders = {os.path.basename(os.path.dirname(p)) for p in FILES}
    assert {"digits", "mnist", "vae", "gan", "shakespeare", "distillation", "finetune", "contrastive"} <= folders


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_example_checks(path):
    r = CliRunner().invoke(main, ["check", path])
    assert r.exit_code == 0 and r.output.startswith("ok:"), r.output


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_readme_gives_every_plans_command(path):
    readme = os.path.join(os.path.dirname(path), "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    for name in dslc.load(path).plans:
        assert f"dslc train {rel(path)} --plan {name}" in text, f"{rel(readme)} lacks the command of `{name}`"


def test_plan_names_are_unique_across_examples():
    """Runs go to runs/PLAN: two examples with one plan name would share (and misread) runs."""
    seen: dict = {}
    for path in FILES:
        for name in dslc.load(path).plans:
            assert name not in seen, f"the plan `{name}` is in {rel(seen.get(name, ''))} and {rel(path)}"
            seen[name] = path


def test_the_index_lists_every_example():
    with open(os.path.join(ROOT, "examples", "README.md"), encoding="utf-8") as f:
        text = f.read()
    for path in FILES:
        assert f"({os.path.basename(os.path.dirname(path))}/)" in text, rel(path)


# Short runs of plans that start no other run, by (file, plan): a plan that takes another's weights
# reuses its run (three plans start from compress_float's) instead of training it again.
RUNS: dict = {}


def short_run_of(path: str, name: str, out_dir):
    """The folder of a short run of `name` (a plan without `init`), made in `out_dir` if none is yet."""
    if (path, name) not in RUNS:
        run_short(path, name, out_dir)
        RUNS[path, name] = out_dir
    return RUNS[path, name]


@pytest.mark.parametrize("path,name", PLANS)
def test_plan_runs_a_short_version(path, name, tmp_path):
    plan = dslc.load(path).plan(name)
    inits = {}
    for key, before in prerequisites(plan).items():
        best = short_run_of(path, before, tmp_path / before) / "checkpoints" / "best.safetensors"
        assert best.is_file()
        inits[key] = str(best).replace("\\", "/")
    extra = ()
    if inits:
        value = f'"{inits[None]}"' if None in inits else \
            "{" + ", ".join(f'{k}: "{v}"' for k, v in inits.items()) + "}"
        extra = (f"init={value}",)
    result, lines = run_short(path, name, tmp_path / "run", extra)
    if inits:
        loaded = [line for line in lines if line.startswith("weights from")]   # the load report's first line
        assert len(loaded) == len(inits) and all(any(v in line for v in inits.values()) for line in loaded), lines
        assert all(not line.split(": loaded ", 1)[1].startswith("0 ") for line in loaded), loaded
    epochs = len(plan.phases) or 1
    assert result["epochs_run"] == epochs and not result.get("paused_after")
    d = tmp_path / "run"
    with open(d / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert all(r["train_loss"] == r["train_loss"] for r in records)           # not NaN
    assert json.loads((d / "result.json").read_text()) == result
    if not inits:
        RUNS.setdefault((path, name), d)   # what a plan that starts from this one's weights needs
    if plan.fields.get("metrics") and plan.data.args.get("test"):
        assert 0.0 <= result["test"]["accuracy"] <= 1.0
