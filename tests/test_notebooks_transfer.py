"""Parts 5-7 run top to bottom at tiny sizes: their inline checks against nst_utils (np.testing.assert_allclose
cells) pass, and they show their figures and numbers, read here from the executed notebooks' outputs."""

import re

import pytest
from nbrun import outputs_text, run_notebook


@pytest.fixture(autouse=True)
def inline_figures(monkeypatch):
    """Let the kernel draw figures into the notebook (CI's MPLBACKEND=Agg would keep them out of its outputs)."""
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def _figures(nb, n):
    """Assert the notebook shows exactly n PNG figures, none of them empty."""
    pngs = [o["data"]["image/png"] for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == n and all(len(p) > 5000 for p in pngs), [len(p) for p in pngs]


def _markdown(nb):
    return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))


def test_05_what_layers_see(tmp_path):
    nb = run_notebook("05_what_layers_see", tmp_path, SIZE=48, STEPS=6, FEATURE_SIZE=64, N_MAPS=2)
    text = outputs_text(nb)
    assert "our loop matches explore.reconstruct_content on conv1_2" in text  # after its assert_allclose passed
    lines = re.findall(r"^ *(.+?): loss (\S+) -> (\S+) \(([\d.]+)% of start, 6 steps\)$", text, re.M)
    assert len(lines) == 10, "5 content and 5 style reconstructions"
    assert all(float(best) < float(start) for _, start, best, _ in lines), lines  # every one lowered its loss
    starts = {label: float(start) for label, start, _, _ in lines}
    # the prose's claim: adding conv5_1 scales the starting style loss by the other layers' new weight, 4/5
    assert abs(starts["conv1_1 ... conv5_1"] / starts["conv1_1 ... conv4_1"] / 0.8 - 1) < 0.02
    assert "precision" not in "\n".join(c.source for c in nb.cells)
    _figures(nb, 5)  # feature maps; content and style reconstructions with their loss curves


def test_06_layer_comparison(tmp_path):
    nb = run_notebook("06_layer_comparison", tmp_path, PAIR_SIZE=48, PAIR_STEPS=5, GRID_SIZE=32, GRID_STEPS=5)
    text = outputs_text(nb)
    assert len(re.findall(r"block\d_conv1: raw channels average .* normalised matches the package", text)) == 5
    assert "block5_conv1 (conv5_1): receptive field 156 x 156 px" in text
    assert "block5_conv2 (conv5_2): receptive field 188 x 188 px" in text
    betas = [float(b) for b in re.search(r"matched betas: conv1_1 (\S+), conv5_1 (\S+)", text).groups()]
    assert all(b > 0 for b in betas)
    table = [line for line in _markdown(nb).splitlines() if line.startswith("| conv1_1") or line.startswith("| + conv")]
    distances = [[float(x) for x in line.strip("|").split("|")[1:]] for line in table]
    assert len(distances) == 5 and all(len(row) == 5 for row in distances)
    assert all(row[-1] > max(row[:-1]) for row in distances)  # the noise start is far from the photo in every row
    assert sum(row[3] for row in distances) > sum(row[0] for row in distances)  # more style, further from the photo
    paper = [float(x) for x in re.findall(r"beta_paper/alpha_paper = (\S+) at", text)]
    assert len(paper) == 4 and all(abs(b / a / 10 - 1) < 0.05 for a, b in zip(paper, paper[1:]))
    _figures(nb, 3)  # Gram magnitudes, the block1/block5 pair, the Fig. 3 grid


def test_07_tune_alpha_beta(tmp_path):
    nb = run_notebook(
        "07_tune_alpha_beta",
        tmp_path,
        SIZE=48,
        PRECOMPUTE_STEPS=3,
        REFINE_STEPS=2,
        PRESET_RATIOS=[0.1, 3.0, 100.0],
        SCALE_STEPS=3,
        TV_CHECK=10.0,
    )
    text = outputs_text(nb)
    diffs = {
        (float(tv) if tv != "0" else 0.0, name): float(mean)
        for tv, name, mean in re.findall(
            r"TV = (\S+), (alpha, beta x10|all three x10): "
            r"pixels differ from the first picture by (\S+)/255 on average",
            text,
        )
    }
    assert len(diffs) == 4
    assert diffs[0.0, "alpha, beta x10"] < 1 and diffs[0.0, "all three x10"] < 1  # TV 0: only the ratio matters
    assert (
        diffs[10.0, "alpha, beta x10"] > 5 * diffs[10.0, "all three x10"]
    )  # TV > 0: scaling alpha, beta alone changes it
    traced, before = map(int, re.search(r"objective traced (\d+) times in all \((\d+) before", text).groups())
    assert traced == before == 2  # loss-and-gradient and loss terms, once each; a slider never traces again
    assert re.search(r"nearest preset shown after \d+ ms, refined picture after [\d.]+ s", text)
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])
    )  # the slider panel was displayed
    _figures(nb, 2)  # the presets and the same-ratio check
