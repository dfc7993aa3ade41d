"""The user controls (several styles, colour preservation, style scale, pooling, layer weights, progress outputs,
interrupt and resume, style mask) have the effect they promise, from the API and the `nst` command."""

import json
import subprocess
import sys

import numpy as np
import pytest

from nst_utils import StyleConfig, gram_matrix, optimizers, stylize
from nst_utils import images as colour
from nst_utils.checkpoint import load
from nst_utils.images import resize
from nst_utils.inputs import normalised_blend, prepare_inputs
from nst_utils.objective import build_objective

FAST = dict(size=64, progress=False)


def flat(rgb, h=64, w=64, seed=0):
    """Return a flat-colour image with a little texture."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array(rgb, np.float32) + rng.normal(0, 0.02, (h, w, 3)), 0, 1).astype(np.float32)


def test_luminance_mode_keeps_the_content_chroma(content_image, style_image):
    r = stylize(content_image, style_image, steps=6, preserve_colors="luminance", beta=1.0, **FAST)
    out, src = colour.rgb_to_yiq(r.image), colour.rgb_to_yiq(content_image)
    assert np.abs(out[..., 1:] - src[..., 1:]).mean() < 0.01  # I and Q are the content's
    assert np.abs(out[..., 0] - src[..., 0]).mean() > 0.005  # the luminance was restyled
    plain = stylize(content_image, style_image, steps=6, beta=1.0, **FAST)
    assert np.abs(colour.rgb_to_yiq(plain.image)[..., 1:] - src[..., 1:]).mean() > 0.01


def test_histogram_matching_gives_the_style_the_content_colour_stats(content_image, style_image):
    matched = colour.match_colour(style_image, content_image)
    (m1, c1), (m2, c2) = colour.colour_stats(matched), colour.colour_stats(content_image)
    np.testing.assert_allclose(m1, m2, atol=0.02)
    np.testing.assert_allclose(c1, c2, atol=0.004)
    assert np.abs(colour.colour_stats(style_image)[0] - m2).max() > 0.05  # it was not matched to begin with
    inputs = prepare_inputs(StyleConfig(size=64, preserve_colors="histogram"), content_image, style_image)
    np.testing.assert_allclose(colour.colour_stats(inputs.styles[0])[0], m2, atol=0.02)
    np.testing.assert_array_equal(inputs.content, content_image)


def test_blend_weight_one_zero_equals_the_single_style_run(content_image, style_image):
    other = flat([0.1, 0.3, 0.9])
    single = stylize(content_image, style_image, steps=4, **FAST)
    blended = stylize(content_image, [style_image, other], steps=4, style_blend=(1, 0), **FAST)
    np.testing.assert_allclose(blended.history["total"], single.history["total"], rtol=1e-5)
    np.testing.assert_allclose(blended.image, single.image, atol=1e-5)
    assert normalised_blend([7, 3], 2) == pytest.approx((0.7, 0.3))
    cfg = StyleConfig(size=64, style_blend=(7, 3))
    inputs = prepare_inputs(cfg, content_image, [style_image, other])
    obj = build_objective(cfg, inputs.content, inputs.styles, inputs.blend)
    a, b = (obj.extractor(s[None]) for s in inputs.styles)
    want = 0.7 * gram_matrix(a["block1_conv1"]) + 0.3 * gram_matrix(b["block1_conv1"])
    np.testing.assert_allclose(obj.style_targets["block1_conv1"].numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


def test_style_scale_resizes_the_style_and_its_target_grams(content_image, style_image):
    half = StyleConfig(size=64, style_scale=0.5)
    inputs = prepare_inputs(half, content_image, style_image)
    assert inputs.styles[0].shape == (32, 32, 3)
    obj = build_objective(half, inputs.content, inputs.styles)
    expected = gram_matrix(obj.extractor(resize(style_image, 32)[None])["block2_conv1"]).numpy()
    got = obj.style_targets["block2_conv1"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    full = build_objective(half.replace(style_scale=1.0), inputs.content, [style_image])
    assert np.abs(full.style_targets["block2_conv1"].numpy() - got).mean() > 0.05 * np.abs(got).mean()


def test_avg_pooling_differs_from_max(content_image, style_image):
    kw = dict(steps=3, **FAST)
    mx, av = (
        stylize(content_image, style_image, pooling="max", **kw),
        stylize(content_image, style_image, pooling="avg", **kw),
    )
    assert mx.config.pooling == "max" and av.config.pooling == "avg"
    assert mx.history["style"][0] != pytest.approx(av.history["style"][0], rel=1e-3)
    assert np.abs(mx.image - av.image).max() > 1e-3


def test_layer_weight_exponent_gives_geometric_normalised_weights():
    w = StyleConfig(style_layer_weight_exp=2.0).layer_weights()
    assert w == pytest.approx([1 / 31, 2 / 31, 4 / 31, 8 / 31, 16 / 31])
    assert StyleConfig(style_layer_weight_exp=1.0).layer_weights() == pytest.approx([0.2] * 5)
    from nst_utils import NSTError

    with pytest.raises(NSTError):
        StyleConfig(style_layer_weight_exp=2.0, style_layer_weights=(1, 1, 1, 1, 1))


def test_save_every_and_plot_write_their_files(tmp_path, content_image, style_image):
    out = tmp_path / "run" / "out.png"
    r = stylize(
        content_image,
        style_image,
        steps=6,
        optimizer="adam",
        output=out,
        save_every=2,
        plot=tmp_path / "losses.png",
        **FAST,
    )
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["out.png", "out_0002.png", "out_0004.png", "out_0006.png"]  # nothing half-written left over
    assert (tmp_path / "losses.png").stat().st_size > 5000 and r.steps == 6


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_resume_continues_from_the_saved_loss(monkeypatch, tmp_path, content_image, style_image, optimizer):
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 0.0)  # lbfgs calls back once per compiled call: one evaluation each

    def stop_at_5(step, image, terms):
        if step == 5:
            raise KeyboardInterrupt

    kw = dict(steps=10, optimizer=optimizer, **FAST)
    cut = stylize(content_image, style_image, callback=stop_at_5, output=tmp_path / "o.png", **kw)
    assert cut.interrupted and cut.steps == 5 and cut.checkpoint == str(tmp_path / "o.ckpt.npz")
    ck = load(cut.checkpoint)
    assert ck.step == 5 and ck.history == cut.history and ck.config.optimizer == optimizer
    assert (tmp_path / "o.png").exists()
    resumed = stylize(resume=cut.checkpoint, progress=False)
    h = resumed.history["total"]
    assert len(h) == 10 and h[:5] == cut.history["total"]
    assert 0.5 * h[4] < h[5] <= 1.01 * h[4] < h[0]  # carries on from where it stopped, not from the start
    assert resumed.best_loss < cut.best_loss
    if optimizer == "adam":  # moments and step count restored: the same run as one without the interruption
        whole = stylize(content_image, style_image, **kw)
        np.testing.assert_allclose(h, whole.history["total"], rtol=1e-4)


def test_mask_puts_each_style_in_its_region():
    content = flat([0.5, 0.5, 0.5], seed=1)
    red, blue = flat([0.9, 0.1, 0.1], seed=2), flat([0.1, 0.1, 0.9], seed=3)
    mask = np.zeros((64, 64), np.float32)
    mask[:, :32] = 1.0  # left: style 1 (red); right: style 2 (blue)
    shallow = dict(content_layers=("block1_conv1",), style_layers=("block1_conv1", "block2_conv1"))  # colour lives here
    r = stylize(content, [red, blue], style_mask=mask, steps=40, alpha=0.0, beta=1.0, tv=1.0, **shallow, **FAST)
    left, right = r.image[:, :24], r.image[:, 40:]
    assert left[..., 0].mean() > left[..., 2].mean() + 0.2, left.mean((0, 1))
    assert right[..., 2].mean() > right[..., 0].mean() + 0.2, right.mean((0, 1))


def nst(*args):
    return subprocess.run([sys.executable, "-m", "nst_utils", *args], capture_output=True, text=True, timeout=600)


def test_cli_several_styles_colour_progress_and_help(tmp_path):
    out, log = tmp_path / "o.png", tmp_path / "h.json"
    r = nst(
        "stylize",
        "tubingen.jpg",
        "--style",
        "starry_night.jpg",
        "the_scream.jpg",
        "--style-blend",
        "3",
        "1",
        "--preserve-colors",
        "luminance",
        "--style-scale",
        "0.5",
        "--style-layer-weight-exp",
        "2",
        "--pooling",
        "avg",
        "--size",
        "64",
        "--steps",
        "4",
        "--save-every",
        "2",
        "--plot",
        str(tmp_path / "l.png"),
        "-o",
        str(out),
        "--log",
        str(log),
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "l.png", "o.png", "o_0002.png", "o_0004.png"]
    cfg = json.loads(log.read_text())["config"]
    assert cfg["style_blend"] == [3.0, 1.0] and cfg["preserve_colors"] == "luminance" and cfg["style_scale"] == 0.5
    help_text = nst("stylize", "--help").stdout
    for flag in (
        "--style ",
        "--style-blend",
        "--preserve-colors",
        "--style-scale",
        "--pooling",
        "--style-layer-weights",
        "--style-layer-weight-exp",
        "--save-every",
        "--plot",
        "--resume",
        "--checkpoint",
        "--style-mask",
    ):
        assert flag in help_text, flag


def test_cli_resume(tmp_path, content_image, style_image):
    def stop(step, image, terms):
        if step == 3:
            raise KeyboardInterrupt

    cut = stylize(
        content_image, style_image, steps=6, optimizer="adam", callback=stop, checkpoint=tmp_path / "c.npz", **FAST
    )
    out, log = tmp_path / "o.png", tmp_path / "h.json"
    r = nst("stylize", "--resume", cut.checkpoint, "--steps", "6", "-o", str(out), "--log", str(log), "-q")
    assert r.returncode == 0, r.stderr
    hist = json.loads(log.read_text())["history"]["total"]
    assert len(hist) == 6 and hist[:3] == pytest.approx(cut.history["total"])
    r = nst("stylize", "--resume", str(tmp_path / "nope.npz"), "-o", str(out))
    assert r.returncode == 2 and "nope.npz" in r.stderr and "Traceback" not in r.stderr
