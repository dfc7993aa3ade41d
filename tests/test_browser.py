"""End to end in a real browser: JupyterLab runs notebook 07, the preview is large, a dragged slider changes it.

Needs Debian's `chromium` (/usr/bin/chromium; `.ci/run` installs it) and the `playwright`
Python package (the `browser` extra); Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import CHROMIUM
from conftest import CHROMIUM_FLAGS as FLAGS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_tune_alpha_beta.ipynb"
TOKEN = "nst-browser-test-token"
TINY = dict(SIZE=64, PRECOMPUTE_STEPS=8, REFINE_STEPS=6, PRESET_RATIOS=[0.1, 3.0, 100.0], SCALE_STEPS=3)

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[browser]')"
)
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does this)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """Yield (base URL, notebook file name) of a JupyterLab serving a tiny copy of notebook 07."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in TINY.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, injected)  # as papermill does: tiny parameters override the defaults
    nbformat.write(nb, tmp_path / "07.ipynb")
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.port_retries=0",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5)
                break
            except OSError as exc:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}"
                    ) from exc
                time.sleep(1)
        yield base, "07.ipynb"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_slider_drag_changes_preview_in_jupyterlab(lab, tmp_path):
    base, name = lab
    shots = Path(os.environ.get("NST_BROWSER_SHOTS", tmp_path))
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/lab/tree/{name}?token={TOKEN}", timeout=180_000)
            page.wait_for_selector(".jp-Notebook", timeout=180_000)
            try:  # JupyterLab may ask which kernel to start: accept its choice (the notebook's python3)
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=30_000)
            except playwright_sync.TimeoutError:
                pass
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=300_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # the whole notebook has run once its last cell (the slider panel) has printed
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                ".some(e => /sliders ready at/.test(e.innerText))",
                timeout=600_000,
            )
            handle = page.locator(".widget-slider .noUi-handle").nth(1)  # beta
            handle.scroll_into_view_if_needed()
            image = page.locator(".jp-OutputArea img.widget-image, .jp-OutputArea .widget-image").first
            before = image.get_attribute("src")
            shown = image.bounding_box()  # the 64 px preview is shown large (box 640 x 480), its aspect kept
            assert shown["width"] >= 600 or shown["height"] >= 450, shown
            tv_text = "document.querySelectorAll('.widget-slider .widget-readout')[2].innerText.trim()"
            assert page.evaluate(tv_text) == "0"  # TV off reads 0, not a log scale's floor
            status = (
                "Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-html-content'))"
                ".map(e => e.innerText).join('|')"
            )
            status_before = page.evaluate(status)
            page.screenshot(path=str(shots / "browser_before.png"))
            box = handle.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 90, y, steps=8)
            page.mouse.up()
            # the read-out and the "refining..." status change at once (in the kernel's handler, before refining)
            readout = (
                "Array.from(document.querySelectorAll('.jp-OutputArea-output .widget-html-content'))"
                ".map(e => e.innerText).find(t => t.includes('beta/alpha')) || ''"
            )
            slider_text = "document.querySelectorAll('.widget-slider .widget-readout')[1].innerText.trim()"
            t0 = time.time()
            page.wait_for_function(f"{readout}.includes('beta = ' + {slider_text})", timeout=10_000)
            assert time.time() - t0 < 5, "the read-out lagged behind the slider"
            page.wait_for_function(f"{status} !== {json.dumps(status_before)}", timeout=10_000)
            page.wait_for_function(
                "([sel, old]) => { const i = document.querySelector(sel); return i && i.src !== old; }",
                arg=[".jp-OutputArea .widget-image", before],
                timeout=180_000,
            )
            page.wait_for_function(f"!{status}.includes('refining...')", timeout=180_000)
            page.screenshot(path=str(shots / "browser_after.png"))
            # four quick key presses: the read-out ends on the slider's own value, in the same format
            handle.focus()
            for _ in range(4):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(f"{readout}.includes('beta = ' + {slider_text})", timeout=10_000)
            page.wait_for_function(f"!{status}.includes('refining...')", timeout=180_000)
            assert page.evaluate(readout).count("beta = " + page.evaluate(slider_text)) == 1
            # the buttons scale alpha and beta together: the ratio stays
            ratio_text = f"({readout}).split('beta/alpha = ')[1].split(' ')[0]"
            ratio = page.evaluate(ratio_text)
            beta_before = page.evaluate(slider_text)  # read before the click: the kernel may answer at once
            page.locator("button", has_text="alpha, beta /10").first.click()  # (the drag and keys went right)
            page.wait_for_function(f"{slider_text} !== {json.dumps(beta_before)}", timeout=30_000)
            page.wait_for_function(f"!{status}.includes('refining...')", timeout=180_000)
            assert page.evaluate(ratio_text) == ratio
            page.screenshot(path=str(shots / "browser_keys_buttons.png"))
            assert image.get_attribute("src") != before
        except Exception:
            if page is not None:
                page.screenshot(path=str(shots / "browser_failure.png"))
            raise
        finally:
            browser.close()
