"""Shared fixtures: real VGG19 weights, a shared feature extractor, synthetic images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# A checkout with ../shared beside it (CI, developers) uses the local copies; elsewhere they resolve as for users.
if (SHARED / "weights").is_dir():
    os.environ.setdefault(
        "NST_VGG19_WEIGHTS", str(SHARED / "weights" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
    )
if (SHARED / "data" / "images").is_dir():
    os.environ.setdefault("NST_DATA_DIR", str(SHARED / "data" / "images"))

# Debian's Chromium as the browser tests start it (tests/test_browser.py, tests/test_site.py): headless, no sandbox
# (root), and none of its background connections to Google's hosts, which this machine's closed network refuses.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

import nst_utils  # noqa: E402  (after the environment is set)
from nst_utils import assets, cli  # noqa: E402


@pytest.fixture(autouse=True)
def cold_runs():
    """Start and leave every test without kept objectives (run.py keeps the last runs' for the next): a test that
    wraps or poisons its run's objective never hands it to another test."""
    run = sys.modules.get("nst_utils.run")  # imported by whichever test ran one (TensorFlow stays lazy otherwise)
    if run is not None:
        run.forget_objectives()
    yield
    run = sys.modules.get("nst_utils.run")
    if run is not None:
        run.forget_objectives()


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """Return the verified path of the real VGG19 weights."""
    return assets.weights_path()


@pytest.fixture(scope="session")
def extractor(weights_path):
    """Return one FeatureExtractor with the default content and style layers."""
    return nst_utils.FeatureExtractor(nst_utils.CONTENT_LAYERS + nst_utils.STYLE_LAYERS, weights_path)


def synthetic_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Return a smooth-plus-texture RGB test image in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], -1) * 0.35 + 0.5
    return np.clip(base + rng.normal(0, 0.08, (h, w, 3)), 0, 1).astype(np.float32)


@pytest.fixture
def content_image() -> np.ndarray:
    """Return a synthetic 48x64 content image."""
    return synthetic_image(48, 64, 1)


@pytest.fixture
def style_image() -> np.ndarray:
    """Return a synthetic stripy 64x64 style image."""
    img = synthetic_image(64, 64, 2)
    img[::6] = [0.9, 0.2, 0.1]
    return img


def nst_in_process(capsys, *argv: str) -> tuple[int, str]:
    """Return (exit code, stderr) of `nst ARGV` run in this process (argparse's exits included)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err
