"""Parts 1-4 and the appendices (engineering, tiling) run end to end at tiny sizes: their inline checks against
nst_utils (np.testing.assert_allclose cells) pass, and they show their figures and numbers. Every notebook in
notebooks/ opens with the header and the install cell that NOTEBOOK_CONVENTIONS fixes, the install URL being
pyproject's."""

import base64
import io
import re

import nbformat
import pytest
from nbrun import NOTEBOOKS, outputs_text, run_notebook
from PIL import Image

# pyproject's [project.urls] Repository (read without tomllib, which Python 3.10 lacks)
REPOSITORY = re.search(r'^Repository = "([^"]+)"', (NOTEBOOKS.parent / "pyproject.toml").read_text(), re.M).group(1)
# The install cell (cell 1 of every notebook), as tools/set_url.py writes it for pyproject's URL: pip installs from
# the repository in Colab or a fresh environment; with the placeholder URL it prints one line instead of failing.
INSTALL_CELL = """# In Colab or a fresh environment, install the tutorial's package first (a clone already has it).
import importlib.util
import subprocess
import sys

REPOSITORY = "{url}"  # `make set-url URL=...` writes it
if importlib.util.find_spec("nst_utils") is None:
    if "/OWNER/" in REPOSITORY:  # a placeholder: nothing to install from
        print("nst_utils is not installed: run this notebook from a clone (`pip install -e .`), or set REPOSITORY")
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "nst-utils @ git+" + REPOSITORY], check=True)"""
LINKS = (
    "[arXiv 1508.06576](https://arxiv.org/abs/1508.06576) · "
    "[TensorFlow tutorial](https://www.tensorflow.org/tutorials/generative/style_transfer)"
)


@pytest.fixture(autouse=True)
def inline_figures(monkeypatch):
    """Let figures reach the executed notebook as image/png outputs, as in Jupyter (the inline backend)."""
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_header_and_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    header, install = nb.cells[0], nb.cells[1]
    number = re.match(r"(\d+)_", path.name)
    parts = len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    where = f"Part {int(number.group(1))} of {parts}" if number else "Appendix"
    assert header.cell_type == "markdown" and re.match(r"# \S", header.source), "the first cell is the title"
    assert f"*{where} · {LINKS}*" in header.source
    for row in ("Prerequisites", "Time to learn", "Time to run"):
        assert re.search(rf"^\| \*\*{row}\*\* \| \S", header.source, re.M), row
    assert "**What you will learn**\n- " in header.source
    assert install.cell_type == "code" and not install.outputs and install.execution_count is None
    assert re.findall(r'^REPOSITORY = "(\S+)"', install.source, re.M) == [REPOSITORY]  # pyproject's URL
    assert install.source == INSTALL_CELL.format(url=REPOSITORY), "run `make set-url` (tools/set_url.py)"


def _pngs(nb) -> list[bytes]:
    """Return the PNG figures an executed notebook shows, in order."""
    return [
        base64.b64decode(o["data"]["image/png"])
        for c in nb.cells
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]


def _check_pngs(nb, n):
    pngs = _pngs(nb)
    assert len(pngs) == n, f"{len(pngs)} figures, expected {n}"
    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def _markdown(nb):
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))


def test_01_load_vgg19(tmp_path):
    nb = run_notebook("01_load_vgg19", tmp_path, SIZE=64)
    text = outputs_text(nb)
    tables = _markdown(nb)
    assert "| block5_conv2 | conv5_2 | conv 3x3 + ReLU | (2, 4, 512) |" in tables  # 64x33 image, computed
    assert "| block1_conv1 | conv1_1 |  |  | yes |\n" in tables and "| block5_conv2 | conv5_2 | yes |  |  |\n" in tables
    assert "| content | content (Gatys) | style (Gatys) |" in tables  # the paper's content layer beside the package's
    assert "| block4_conv2 | conv4_2 |  | yes |  |\n" in tables
    assert "block5_conv2: (1, 2, 4, 512)" in text  # the Keras-way extractor's output at the same size
    diff = float(re.search(r"Keras-way extractor vs nst.FeatureExtractor: (\S+)", text).group(1))
    assert diff < 1e-3
    source = "\n".join(c.source for c in nb.cells)
    assert "precision" not in source and "bfloat16" not in source  # engineering: the appendix explains it
    _check_pngs(nb, 2)  # the pipeline picture and the layer shapes


def test_02_images(tmp_path):
    nb = run_notebook("02_images", tmp_path, SIZE=64)
    text = outputs_text(nb)
    assert "preprocess matches keras.applications.vgg19.preprocess_input and nst.preprocess" in text
    errors = [float(x) for x in re.findall(r"max abs round-trip error[^:]*: (\S+)", text)]
    assert len(errors) == 2 and max(errors) < 1e-4
    # the text's account of the middle panel: the swap and the means add up to what it shows
    shown, swap, means = map(
        float, re.search(r"shown as RGB: 'red' - 'blue' = (\S+) = (\S+) \(the swap\) (\S+)", text).groups()
    )
    assert abs(shown - swap - means) < 0.11 and abs(means - 19.7) < 0.05
    # the view min-max scales the input: its span is at most 255 + 19.7 (0 - mu_R .. 255 - mu_B), and the text's
    # difference in VGG units shows smaller in the view
    view = r"the view maps (\S+)\.\.(\S+) \(a span of (\S+)\) onto 0\.\.255: (\S+) VGG units show as (\S+)"
    lo, hi, span, shown_again, in_view = map(float, re.search(view, text).groups())
    assert abs(hi - lo - span) < 0.11 and span <= 274.8 and shown_again == shown
    assert abs(in_view - 255 * shown / span) < 0.11 and abs(in_view) < abs(shown)
    _check_pngs(nb, 3)


def test_03_losses(tmp_path):
    nb = run_notebook("03_losses", tmp_path, SIZE=64)
    text = outputs_text(nb)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "GradientTape" not in source and "Objective" not in source  # part 4 teaches them
    style_after, gram_size = map(
        float, re.search(r"shuffling positions: (\S+) \(mean squared Gram entry: (\S+)\)", text).groups()
    )
    content_after = float(re.search(r"content loss after shuffling positions: (\S+)", text).group(1))
    assert style_after < 1e-6 * gram_size and content_after > 1.0
    assert "total_variation = [6.]" in text
    # the text: after the ReLU the mean part mu mu^T is most of each Gram matrix
    mean_shares = [float(v) for v in re.findall(r"\|mu mu\^T\| / \|G\| = (\S+)", text)]
    assert len(mean_shares) == 4 and min(mean_shares) > 0.5
    shares = dict(re.findall(r"(block\d_conv1): style_loss\(photo, painting\) = \S+ \((\S+)% of the sum\)", text))
    assert len(shares) == 5 and abs(sum(map(float, shares.values())) - 100) < 0.5
    assert float(shares["block4_conv1"]) > 90  # the text: conv4_1 is nearly all of the equally weighted loss
    # the photo recoloured like the painting: most of conv1_1's style loss goes, less (or none) of the deeper ones'
    left = {k: float(v) for k, v in re.findall(r"(block\d_conv1): style loss to the painting .* \((\S+) of it\)", text)}
    assert len(left) == 5 and left["block1_conv1"] < 0.5
    assert all(v > left["block1_conv1"] for k, v in left.items() if k != "block1_conv1")
    # TV is a sum: from SIZE to 4 SIZE its charge for the same noise grows about as the pixels, the means' far less
    pixels, tv_grow, content_grow, style_grow, photo_tv_grow = map(
        float,
        re.search(
            r"pixels x(\S+), TV's charge x(\S+), content's x(\S+), style's x(\S+) \(the photo's own TV x(\S+)\)", text
        ).groups(),
    )
    assert pixels > 15 and 0.6 * pixels < tv_grow < 2 * pixels and max(content_grow, style_grow) < 0.25 * tv_grow
    assert pixels**0.5 < photo_tv_grow < pixels  # the text: between the side's factor and the pixel count's
    # the paper/package conversion, printed after its assert_allclose checks passed
    n_c, m_c = map(int, re.search(r"N_c = (\d+), M_c = (\d+) positions", text).groups())
    assert n_c == 512 and m_c == 2 * 4  # conv5_2 of a 64x33 image
    ratio, alpha_p, beta_p, ratio_p = map(
        float,
        re.search(
            r"\(beta/alpha = (\S+)\)  ==  paper alpha_paper = (\S+), beta_paper = (\S+) "
            r"\(beta_paper/alpha_paper = (\S+)\)",
            text,
        ).groups(),
    )
    assert abs(ratio_p / (ratio * 2 * n_c * m_c) - 1) < 1e-2
    assert abs(beta_p / alpha_p / ratio_p - 1) < 1e-2
    _check_pngs(nb, 4)  # the Gram heatmaps, the recoloured photo, the candidates, the loss comparison


def test_04_optimize(tmp_path):
    nb = run_notebook("04_optimize", tmp_path, SIZE=48, STEPS=8, STYLE_SIZE=96, ADAM_STEPS=3, SCIPY_STEPS=6)
    text = outputs_text(nb)
    assert "Running on" in text
    # the hand-written train_step agrees with the package's Adam (its assert_allclose cell passed too)
    gap = float(
        re.search(r"train_step vs optimizers.Adam: largest relative difference over 3 steps (\S+)", text).group(1)
    )
    assert gap < 1e-3
    # the prose: Adam's epsilon = 0.1 is negligible beside the gradients at the photo
    first = re.search(r"median \|gradient\| at the photo, as Adam's first step sees it: (\S+), against epsilon", text)
    assert float(first.group(1)) > 10
    scipy_start, scipy_best = map(
        float, re.search(r"scipy L-BFGS-B: loss (\S+) -> best (\S+) in the first 6 evaluations", text).groups()
    )
    assert scipy_best < scipy_start
    # scipy.optimize.minimize in view reaches the package's run_scipy_lbfgs losses, evaluation by evaluation
    last = re.search(r"the same loss after each of 6 evaluations; last (\S+) vs (\S+)", text).groups()
    assert abs(float(last[0]) / float(last[1]) - 1) < 1e-3
    # the whole algorithm on one screen reproduces the package's Adam
    one_screen = float(
        re.search(
            r"one screen vs optimizers.Adam: the same loss at each of 3 steps, largest relative difference (\S+)", text
        ).group(1)
    )
    assert one_screen < 1e-3
    # the first picture: SIZE on the long side, after STEPS evaluations
    first = re.search(r"^8 evaluations, best loss (\S+); result (\d+)x(\d+) px$", text, re.M)
    assert first and max(int(first.group(2)), int(first.group(3))) == 48
    runs = {
        name: (int(n), float(start), float(best))
        for name, n, start, best in re.findall(
            r"^(lbfgs|adam): (\d+) evaluations, loss (\S+) -> best (\S+)$", text, re.M
        )
    }
    assert set(runs) == {"lbfgs", "adam"}
    for name, (n, start, best) in runs.items():
        assert n == 8 and best < start, (name, runs[name])
    assert abs(runs["lbfgs"][2] / float(first.group(1)) - 1) < 1e-3  # the comparison reuses the first picture's run
    # the hand-written objective sees the painting at STYLE_SIZE, as stylize does: the same loss at the photo
    photo = float(re.search(r"^ *photo: loss (\S+), same as nst.Objective$", text, re.M).group(1))
    assert abs(runs["lbfgs"][1] / photo - 1) < 1e-2
    # colour preservation brings the result's mean colour closer to the photo's
    dist = dict(re.findall(r"^ *(default|luminance|histogram): mean colour distance to the photo (\S+)$", text, re.M))
    assert set(dist) == {"default", "luminance", "histogram"}
    assert float(dist["luminance"]) < float(dist["default"]) and float(dist["histogram"]) < float(dist["default"])
    source = "\n".join(c.source for c in nb.cells)
    assert "precision" not in source and "bfloat16" not in source  # engineering: the appendix explains it
    # first picture, progress, loss terms, L-BFGS vs Adam (curves and pictures), colour preservation
    _check_pngs(nb, 6)
    for png in _pngs(nb):
        assert Image.open(io.BytesIO(png)).width <= 1450  # legible at the site's width and in JupyterLab


def test_appendix_engineering(tmp_path):
    nb = run_notebook("appendix_engineering", tmp_path, SIZE=48, STEPS=8)
    text = outputs_text(nb)
    assert "md5:          253f8cb515780f3b799900260a226db6" in text and "verified:     True" in text
    timing = {
        p: (float(ms), float(v))
        for p, ms, v in re.findall(
            r"(float32|bfloat16): +(\S+) ms per evaluation, objective at the content image (\S+)", text
        )
    }
    assert set(timing) == {"float32", "bfloat16"} and all(ms > 0 for ms, _ in timing.values())
    assert abs(timing["bfloat16"][1] / timing["float32"][1] - 1) < 0.05
    assert re.search(r"precision='auto' picks (float32|bfloat16)", text)
    # the two L-BFGS implementations timed after compiling, reaching about the same loss
    lbfgs = {
        name: (float(ms), float(best))
        for name, ms, best in re.findall(
            r"(lbfgs|lbfgs-scipy): +(\S+) ms per evaluation after compiling \(.*\), best loss (\S+)", text
        )
    }
    assert set(lbfgs) == {"lbfgs", "lbfgs-scipy"} and all(ms > 0 for ms, _ in lbfgs.values())
    assert abs(lbfgs["lbfgs"][1] / lbfgs["lbfgs-scipy"][1] - 1) < 0.2
    # the prose compares whole runs: the printed ratio is that of the two printed whole-run times
    whole = dict(re.findall(r"(lbfgs|lbfgs-scipy): .*\((\S+) s for the whole run of 8\)", text))
    ratio = float(re.search(r"whole runs: lbfgs takes (\S+)x the time of lbfgs-scipy", text).group(1))
    assert ratio > 0 and abs(ratio / (float(whole["lbfgs"]) / float(whole["lbfgs-scipy"])) - 1) < 0.05
    _check_pngs(nb, 1)


def test_appendix_tiling(tmp_path):
    nb = run_notebook("appendix_tiling", tmp_path, SIZE=96, TILE=32, HAND_SIZE=64, STEPS=3)
    text = outputs_text(nb)
    # the package's memory estimate for four sizes of the photo's shape: untiled it grows about as the pixels at the
    # top; in 512 px tiles it is the same while one tile holds the picture, far less at 4096 px
    table = re.findall(r"^\| \d+ px \| \d+ x \d+ \| \S+ GiB \| (\S+) GiB \| (\S+) GiB \|$", _markdown(nb), re.M)
    untiled, tiled = ([float(row[i]) for row in table] for i in (0, 1))
    assert len(table) == 4 and untiled == sorted(untiled) and untiled[3] / untiled[2] > 3
    assert tiled[0] == untiled[0] and tiled[3] < untiled[3] / 3
    # the reach written by hand (checked against the package on every layer): part 6's receptive fields, the halos
    assert "block5_conv1: sees 70 px left, 85 px right, stride 16; receptive field 156 px; halo 80 px" in text
    assert "block5_conv2: sees 86 px left, 101 px right, stride 16; receptive field 188 px; halo 96 px" in text
    # a window on the stride's grid has the picture's units; half a stride off, it does not
    gaps = {
        int(s): (float(g), float(top))
        for s, g, top in re.findall(
            r"window starting (\d+) px in: largest difference from the picture's units (\S+) \(the units reach (\S+)\)",
            text,
        )
    }
    assert set(gaps) == {4, 2} and gaps[4][0] <= 1e-4 * gaps[4][1] and gaps[2][0] > 0.05 * gaps[2][1]
    # the two passes by hand: the untiled loss and gradient; the tiles' own Gram losses are other numbers
    hand = re.search(r"loss (\S+) vs untiled (\S+); largest gradient difference (\S+) of the largest entry", text)
    assert abs(float(hand.group(1)) / float(hand.group(2)) - 1) < 1e-4 and float(hand.group(3)) < 1e-4
    own = [float(v) for v in re.search(r"painting's instead: losses (.+)$", text, re.M).group(1).split(", ")]
    assert len(own) == 4 and max(abs(v / float(hand.group(2)) - 1) for v in own) > 0.01
    # the package's TiledObjective: several tiles, the untiled terms and gradient
    tiles = int(re.search(r"px in (\d+) tiles of about 32 px, halo 96 px", text).group(1))
    terms, grad = map(
        float, re.search(r"of the terms (\S+), of the gradient (\S+) \(to its largest entry\)", text).groups()
    )
    assert tiles > 1 and terms < 1e-4 and grad < 1e-4
    # a halo narrower than the reach: the gradient is wrong; the exact halo: rounding
    errors = {
        (layers, int(halo)): float(e)
        for layers, halo, e in re.findall(
            r"^(default layers|layers to conv3_2).*, halo (\d+) px: gradient error up to (\S+) of the largest entry",
            text,
            re.M,
        )
    }
    assert set(errors) == {
        ("default layers", 0),
        ("default layers", 96),
        ("layers to conv3_2", 0),
        ("layers to conv3_2", 16),
    }
    assert errors["default layers", 0] > 0.1 and errors["layers to conv3_2", 0] > 0.1
    assert errors["default layers", 96] < 1e-4 and errors["layers to conv3_2", 16] < 1e-4
    # stylize(tile=...) makes the untiled picture: the same losses, a difference of at most a few 8-bit levels
    losses, most = map(
        float, re.search(r"losses agree to (\S+) \(relative\); the pictures differ by at most (\S+),", text).groups()
    )
    # (not bitwise the same: the tiled run did evaluate in tiles, whose float32 sums round differently)
    assert losses < 1e-3 and 0 < most < 5 / 255
    _check_pngs(nb, 2)  # the gradient errors, the two runs
