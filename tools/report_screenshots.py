"""Writes docs/images/report_model.png and report_run.png, the README's pictures of `dslc report`:
the model page of specs/resnet.dl's ResNet18 with `layer2.0` opened and a box hovered, and the
run page of a short digits run, both in headless Chromium (Playwright, the system browser).
Run by hand: .venv/bin/python tools/report_screenshots.py"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSLC = [sys.executable, "-m", "dslc"]


def main() -> None:
    from playwright.sync_api import sync_playwright
    out = os.path.join(ROOT, "docs", "images")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "ResNet18.html")
        subprocess.run(DSLC + ["report", os.path.join(ROOT, "specs", "resnet.dl"), "--model", "ResNet18",
                               "-o", model], check=True)
        subprocess.run(DSLC + ["train", os.path.join(ROOT, "examples", "digits", "digits.dl"), "--plan", "mlp",
                               "--out", os.path.join(tmp, "mlp"), "--set", "epochs=15"], check=True,
                       stdout=subprocess.DEVNULL)
        run = os.path.join(tmp, "mlp.html")
        subprocess.run(DSLC + ["report", os.path.join(tmp, "mlp"), "-o", run], check=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto("file://" + model)
            page.locator('#diagram g[id="block:layer2.0"]').click()
            page.locator("#diagram g.node").filter(has_text="conv1").first.hover()
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=os.path.join(out, "report_model.png"))
            page.goto("file://" + run)
            page.locator(".chart svg").first.hover()
            page.screenshot(path=os.path.join(out, "report_run.png"))
            browser.close()
    print("wrote docs/images/report_model.png and report_run.png")


if __name__ == "__main__":
    main()
