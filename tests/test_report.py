"""`dslc report` (issue #18 item 4): a model's page and a run's page, each one self-contained HTML
file. Their content is checked against dslc's summary and the run's own files; then each page is
opened in headless Chromium (Playwright, with the system browser) and used as a person would:
no console errors, the diagram, table and curves drawn with a size, a click on a block opens it,
hovering a box or a curve shows its numbers."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner
from support import ROOT

import dslc
from dslc.api import train
from dslc.cli import main
from dslc.runtime.trainer import Options

RESNET = os.path.join(ROOT, "specs", "resnet.dl")
PLAN = """
model Net {
    input x: [B, 1, 8, 8]
    Flatten()
    Linear(32)
    ReLU()
    Linear(10)
}

train small {
    model      = Net()
    data       = digits(val=0.2, test=0.2, limit=300)
    loss       = cross_entropy(out, batch.y)
    optimizer  = Adam(lr=1e-2)
    epochs     = 3
    batch_size = 32
    metrics    = [accuracy]
}
"""


@pytest.fixture(scope="module")
def model_html(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "ResNet18.html"
    r = CliRunner().invoke(main, ["report", RESNET, "--model", "ResNet18", "-o", str(out)])
    assert r.exit_code == 0, r.output
    return str(out)


@pytest.fixture(scope="module")
def run_html(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("run")
    spec = base / "small.dl"
    spec.write_text(PLAN)
    train(str(spec), "small", Options(out=str(base / "runs" / "small"), progress=False), out=lambda s: None)
    out = base / "small.html"
    r = CliRunner().invoke(main, ["report", str(base / "runs" / "small"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return str(out)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- what the pages hold

def test_the_model_page_holds_the_summary_the_diagrams_and_the_source(model_html):
    page = read(model_html)
    summary = dslc.load(RESNET).summary("ResNet18")
    assert f"{summary.total_params:,}" in page or "11.69M" in page
    for row in summary.layers[:20]:
        assert f'data-value="{row.params}"' in page and f">{row.name}<" in page
    opened = re.findall(r'<template id="v:([^"]+)">', page)
    assert "layer2.0" in opened and len(opened) >= 8          # every block of the first drawing can open
    assert 'id="L-61"' in page and "#L-61" in page             # conv1's box links to its spec line
    assert "<script src" not in page and "<link" not in page and "http://" not in page.replace(
        "http://www.w3.org", "")                               # nothing fetched: one file


def test_the_run_page_holds_the_curves_data_the_result_and_the_pictures(run_html):
    page = read(run_html)
    run = os.path.join(os.path.dirname(run_html), "runs", "small")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    data = json.loads(re.search(r"const data = (\{.*?\});", page).group(1))
    assert data["val_loss"] == [[r["epoch"], r["val_loss"]] for r in records]
    with open(os.path.join(run, "result.json")) as f:
        result = json.load(f)
    assert f"{result['test']['accuracy']:.6g}" in page
    assert page.count("data:image/png;base64,") >= 2           # the confusion matrix and the health figure
    assert 'href="runs/small/checkpoints/best.safetensors"' in page
    assert "train small {" in re.sub(r"<[^>]+>", "", page)            # the plan, highlighted


def test_report_refuses_a_folder_that_is_not_a_run_and_a_bad_spec(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "E0901" in r.output and "not a run folder" in r.output
    bad = tmp_path / "bad.dl"
    bad.write_text("model M {\n    input x: [B, 4]\n    output x -> Linear(4\n")
    r = CliRunner().invoke(main, ["report", str(bad)])
    assert r.exit_code == 1 and "E0104" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- in a real browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (`make test` installs Debian's `chromium` when run as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + os.path.abspath(path))
    return page, errors


def test_the_model_page_in_a_browser(browser, model_html, tmp_path):
    page, errors = _open(browser, model_html)
    box = page.locator("#diagram svg").bounding_box()
    assert box["width"] > 100 and box["height"] > 300
    assert page.locator("#summary tbody tr").count() == len(dslc.load(RESNET).summary("ResNet18").layers)
    block = page.locator('#diagram g[id="block:layer2.0"]')
    assert block.count() == 1
    before = page.locator("#diagram g.node").count()
    block.click()
    assert page.locator("#diagram").get_attribute("data-open") == "layer2.0"
    assert page.locator("#diagram g.cluster").filter(has_text="0: BasicBlock").count() >= 1
    assert page.locator("#diagram g.node").count() > before          # its layers are drawn now
    page.locator("#diagram g.node").filter(has_text="conv1").first.hover()
    tip = page.locator("#tip")
    assert tip.is_visible() and "output [B, 64, 112, 112]" in tip.text_content()
    header = page.locator("#summary th").nth(3)                       # sort by parameters, largest first
    header.click()
    header.click()
    first = page.locator("#summary tbody tr").first.locator("td").nth(3).text_content()
    assert int(first.replace(",", "")) == max(r.params for r in dslc.load(RESNET).summary("ResNet18").layers)
    page.screenshot(path=str(tmp_path / "model.png"))
    assert os.path.getsize(tmp_path / "model.png") > 10_000 and errors == []


def test_the_run_page_in_a_browser(browser, run_html, tmp_path):
    page, errors = _open(browser, run_html)
    charts = page.locator(".chart svg")
    assert charts.count() == 3                                        # loss, accuracy, learning rate
    for i in range(3):
        box = charts.nth(i).bounding_box()
        assert box["width"] > 200 and box["height"] > 100
    assert page.locator(".chart").first.locator("path.series").count() == 2
    charts.first.hover()
    assert page.locator("#tip").is_visible() and "val_loss" in page.locator("#tip").text_content()
    for img in page.locator("img").all():
        assert img.evaluate("i => i.naturalWidth") > 0
    page.screenshot(path=str(tmp_path / "run.png"))
    assert errors == []
