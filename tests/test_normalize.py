"""Gatys et al.'s normalised VGG19: the factors, their cache, their equivalence to rescaled filters, and a sweep
over layers and beta/alpha whose pictures progress along both axes."""

import numpy as np
import pytest
import tensorflow as tf

from nst_utils import assets as data
from nst_utils import model
from nst_utils.cli import build_parser, weight_settings
from nst_utils.config import CONV_LAYERS, GRID_RATIOS, NORMALIZED, StyleConfig, network_defaults, paper_alpha_over_beta
from nst_utils.explore import gram_magnitudes, grid_distances
from nst_utils.images import as_image, load_image, preprocess
from nst_utils.model import get_extractor
from nst_utils.sweep import cumulative_layer_weights, grid_settings, sweep


@pytest.fixture(scope="module")
def reference_images():
    """The registry's six images at the size the factors are computed at."""
    return [load_image(data.image_path(n), max_size=model.REFERENCE_SIZE) for n in model.REFERENCE_IMAGES]


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_factors_give_mean_channel_activation_one_on_the_reference_images(reference_images, pooling):
    ext = model.FeatureExtractor(CONV_LAYERS, pooling=pooling, normalize=True)
    means = {
        n: np.mean([ext(img[None])[n].numpy().mean(axis=(0, 1, 2)) for img in reference_images], axis=0)
        for n in CONV_LAYERS
    }
    raw = model.channel_means(pooling)
    for n in CONV_LAYERS:
        live = raw[n] > 0
        assert live.mean() > 0.9, n  # almost every channel fires somewhere
        np.testing.assert_allclose(means[n][live], 1.0, rtol=1e-3, err_msg=n)
    assert max(raw[n].mean() for n in CONV_LAYERS) / min(raw[n].mean() for n in CONV_LAYERS) > 100


def test_factors_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    model.channel_means.cache_clear()
    try:
        first = model.channel_means("max")
        files = list(tmp_path.glob("vgg19_channel_means_max_*.npz"))
        assert len(files) == 1
        stamp = files[0].stat().st_mtime_ns
        model.channel_means.cache_clear()
        again = model.channel_means("max")  # read back, not recomputed
        assert files[0].stat().st_mtime_ns == stamp
        for n in CONV_LAYERS:
            np.testing.assert_array_equal(first[n], again[n])
    finally:
        model.channel_means.cache_clear()


def test_output_scaling_equals_gatys_rescaled_filters(content_image):
    """Scaling each layer's output by 1/mean is the network whose filters were rescaled (W' = W m_in / m_out)."""
    layers = ("block1_conv1", "block1_conv2", "block1_pool", "block2_conv1")
    normalized = model.FeatureExtractor(layers, pooling="avg", normalize=True)(content_image[None])
    params = model._read_weights(model.assets.weights_path(), ("block1_conv1", "block1_conv2", "block2_conv1"))
    means = model.channel_means("avg")
    x, m_in = tf.constant(preprocess(content_image[None])), np.ones(3, np.float32)
    for name in layers:
        if "pool" in name:
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
            continue
        kernel, bias = params[name]
        m_out = means[name]
        x = tf.nn.relu(tf.nn.conv2d(x, kernel * m_in[:, None] / m_out, 1, "SAME") + bias / m_out)
        m_in = m_out
        np.testing.assert_allclose(x.numpy(), normalized[name].numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


def test_extractor_cache_keeps_normalised_and_raw_apart():
    raw = get_extractor(("block1_conv1",), "avg")
    norm = get_extractor(("block1_conv1",), "avg", normalize=True)
    assert raw is not norm and norm.normalize and not raw.normalize
    assert get_extractor(("block1_conv1",), "avg", normalize=True) is norm


def test_normalisation_evens_out_the_layers(content_image, style_image):
    layers = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
    spread = {}
    for normalize, pooling in ((False, "max"), (True, "avg")):
        loss = [
            m["style loss"] for m in gram_magnitudes(content_image, style_image, layers, pooling, normalize).values()
        ]
        spread[normalize] = max(loss) / min(loss)
    assert spread[False] > 100 * spread[True]


def test_paper_ratio_conversion():
    # 256x192 image: block5_conv2 is 16x12 with 512 channels; ours alpha/beta 1/10 -> 0.1 / (2 * 512 * 192)
    assert paper_alpha_over_beta(1.0, 10.0, (192, 256)) == pytest.approx(0.1 / (2 * 512 * 16 * 12))
    assert paper_alpha_over_beta(1.0, 10.0, (192, 256), "block4_conv2") == pytest.approx(0.1 / (2 * 512 * 32 * 24))


def test_cumulative_sweep_progresses_along_both_axes():
    """Normalised network: every row differs from the one above, and along each row the picture moves away from
    the photo as beta/alpha grows (strongest column clearly further than the weakest)."""
    size, ratios = 64, (GRID_RATIOS[0], GRID_RATIOS[-1] / 10, GRID_RATIOS[-1])
    layers = ("block1_conv1", "block3_conv1", "block5_conv1")
    results = sweep(
        "tubingen.jpg",
        "starry_night.jpg",
        StyleConfig.normalized(size=size, steps=25, style_layers=layers, precision="float32"),
        grid_settings(cumulative_layer_weights(len(layers)), ratios),
        progress=False,
    )
    content = as_image("tubingen.jpg", size)
    d = grid_distances([r.image for r in results], content, len(ratios))
    assert np.all(np.diff(d, axis=1) > 0), d  # further from the photo with every step in beta/alpha
    assert np.all(d[:, -1] > 2 * d[:, 0]), d
    images = np.stack([r.image for r in results]).reshape(len(layers), len(ratios), *content.shape)
    row_change = np.abs(np.diff(images, axis=0)).mean(axis=(2, 3, 4))  # (rows - 1, cols)
    assert np.all(row_change[:, 1:] > 0.01), row_change  # adjacent rows differ visibly once style shows


def test_cli_flags_pick_the_network_and_its_defaults():
    p = build_parser()
    for argv, expected in (
        (["stylize"], {"normalize_vgg": False, "pooling": "max", "alpha": 1e4}),
        (["stylize", "--normalize-vgg"], NORMALIZED),
        (
            ["stylize", "--normalize-vgg", "--beta", "30", "--pooling", "max"],
            NORMALIZED | {"beta": 30.0, "pooling": "max"},
        ),
        (["sweep"], NORMALIZED),
        (["sweep", "--no-normalize-vgg"], {"normalize_vgg": False, "tv": 30.0}),
    ):
        args = p.parse_args(argv)
        got = weight_settings(args, network_defaults(args.normalize_vgg))
        assert expected.items() <= got.items(), (argv, got)
    assert StyleConfig(**weight_settings(args, network_defaults(False))).normalize_vgg is False
