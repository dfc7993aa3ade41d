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
    lines = re.findall(r"^ *(.+?): loss (\S+) -> (\S+) \(([\d.]+)% of start, 6 (?:steps|evaluations)\)$", text, re.M)
    assert len(lines) == 10, "5 content and 5 style reconstructions"
    assert all(float(best) < float(start) for _, start, best, _ in lines), lines  # every one lowered its loss
    starts = {label: float(start) for label, start, _, _ in lines}
    assert "conv1_1 + conv2_1" in starts  # two layers named as the package names them
    # the prose's claim: adding conv5_1 scales the starting style loss by the other layers' new weight, 4/5
    assert abs(starts["conv1_1 ... conv5_1"] / starts["conv1_1 ... conv4_1"] / 0.8 - 1) < 0.02
    assert "precision" not in "\n".join(c.source for c in nb.cells)
    _figures(nb, 5)  # feature maps; content and style reconstructions with their loss curves


def test_06_layer_comparison(tmp_path):
    nb = run_notebook("06_layer_comparison", tmp_path, PAIR_SIZE=48, PAIR_STEPS=5, GRID_SIZE=32, GRID_STEPS=5)
    text = outputs_text(nb)
    assert len(re.findall(r"block\d_conv1: raw channels average .* normalised matches the package", text)) == 5
    assert "channel means over japanese_garden.jpg, picasso_selfportrait.jpg, " in text  # the default pair among them
    spread = dict(
        re.findall(
            r"^(raw, max pooling|raw, average pooling|normalised, average pooling): largest style "
            r"loss conv\d_1, largest / smallest = (\S+)$",
            text,
            re.M,
        )
    )
    spread = {name: float(x) for name, x in spread.items()}
    assert len(spread) == 3  # one change at a time: pooling, then the normalisation
    assert spread["normalised, average pooling"] * 100 < min(spread["raw, max pooling"], spread["raw, average pooling"])
    assert "block5_conv1 (conv5_1): receptive field 156 x 156 px" in text
    assert "block5_conv2 (conv5_2): receptive field 188 x 188 px" in text
    assert "the pair's photo: 48 x 25 px" in text
    b1, b5, ratio = map(
        float, re.search(r"matched betas: conv1_1 (\S+), conv5_1 (\S+) \(conv5_1 / conv1_1 = (\S+)\)", text).groups()
    )
    assert b1 > 0 and b5 > 0 and abs(ratio / (b5 / b1) - 1) < 0.1
    table = [line for line in _markdown(nb).splitlines() if line.startswith("| conv1_1") or line.startswith("| + conv")]
    distances = [[float(x) for x in line.strip("|").split("|")[1:]] for line in table]
    assert len(distances) == 5 and all(len(row) == 4 for row in distances)  # 5 layer sets x 4 ratios, no noise column
    assert all(row[-1] > row[0] for row in distances)  # in every row, more style moves further from the photo
    ratios = {"0.1": 0, "1": 1, "10": 2, "100": 3}
    rows = ["conv1_1"] + [f"+ conv{k}_1" for k in range(2, 6)]
    stalled = r"^(conv1_1|\+ conv\d_1), beta/alpha (\S+): .*the result is the start image"  # a cell's message
    for label, ratio in re.findall(stalled, text, re.M):
        assert distances[rows.index(label)][ratios[ratio]] == 0  # a cell that never improved on the photo is the photo
    paper = re.findall(r"beta_paper/alpha_paper = (\S+) at \d+x\d+ px: (inside|above|below) the paper's range", text)
    values = [float(v) for v, _ in paper]
    assert len(values) == 4 and all(abs(b / a / 10 - 1) < 0.05 for a, b in zip(values, values[1:]))
    assert all(
        w == ("inside" if 1e2 <= v <= 1e5 else "above" if v > 1e5 else "below") for v, (_, w) in zip(values, paper)
    )
    _figures(nb, 3)  # Gram magnitudes of three networks, the conv1_1 / conv5_1 pair, the Fig. 3 grid


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
        float(tv): float(mean)
        for tv, mean in re.findall(
            r"alpha 10, beta 30, tv (\S+): differs from the first picture by (\S+)/255 on average", text
        )
    }
    assert set(diffs) == {100.0, 10.0}  # all three weights x10, then only alpha and beta x10
    assert diffs[100.0] < 1  # the same ratios: the same picture, up to float rounding
    assert diffs[10.0] > 5 * diffs[100.0]  # tv relatively weaker: another picture
    start, refined = map(
        float, re.search(r"objective at beta/alpha = 30: (\S+) at the preset, (\S+) refined", text).groups()
    )
    assert refined < start  # the refinement from the nearest preset lowers the objective at the new weights
    assert "sliders ready at beta/alpha = 3, tv = 0" in text
    assert any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])
    )  # the slider panel was displayed
    _figures(nb, 3)  # the same-ratio check, the presets, a release
