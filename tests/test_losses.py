"""Loss terms against a NumPy reference, their invariances, and the Objective's variables."""

import numpy as np
import pytest
import tensorflow as tf

import nst_utils
from nst_utils import Objective, content_loss, gram_matrix, style_loss, total_variation
from nst_utils.config import StyleConfig
from nst_utils.objective import build_objective


def np_gram(f: np.ndarray) -> np.ndarray:
    b, h, w, c = f.shape
    m = f.reshape(b, h * w, c)
    return np.einsum("bpc,bpd->bcd", m, m) / (h * w)


def test_gram_matches_numpy():
    f = np.random.default_rng(0).normal(size=(2, 5, 7, 4)).astype(np.float32)
    np.testing.assert_allclose(gram_matrix(f).numpy(), np_gram(f), rtol=1e-5, atol=1e-6)


def test_content_and_style_loss_match_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(content_loss(a, b).numpy(), ((a - b) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    ga, gb = np_gram(a), np_gram(b)
    np.testing.assert_allclose(style_loss(ga, gb).numpy(), ((ga - gb) ** 2).mean(axis=(1, 2)), rtol=1e-5)


def test_total_variation_matches_numpy():
    img = np.random.default_rng(2).uniform(size=(1, 9, 11, 3)).astype(np.float32)
    ref = np.abs(np.diff(img, axis=1)).sum() + np.abs(np.diff(img, axis=2)).sum()
    np.testing.assert_allclose(total_variation(img).numpy(), [ref], rtol=1e-5)
    assert total_variation(np.full((1, 9, 11, 3), 0.3, np.float32)).numpy()[0] == 0


def test_content_loss_zero_for_identical_features(extractor, content_image):
    f = extractor(content_image[None])["block5_conv2"]
    assert float(content_loss(f, f)[0]) == 0.0
    other = extractor(content_image[None, ::-1])["block5_conv2"]
    assert float(content_loss(f, other)[0]) > 0.0


def test_style_loss_ignores_where_things_are(extractor, style_image):
    feats = extractor(style_image[None])["block3_conv1"].numpy()
    b, h, w, c = feats.shape
    perm = np.random.default_rng(3).permutation(h * w)
    shuffled = feats.reshape(b, h * w, c)[:, perm].reshape(b, h, w, c)
    g, gs = gram_matrix(feats), gram_matrix(shuffled)
    assert float(style_loss(g, gs)[0]) < 1e-6 * float(tf.reduce_mean(g**2))
    # ... whereas the content loss of the same shuffle is large
    assert float(content_loss(feats, shuffled)[0]) > 0.1 * float(np.mean(feats**2))


def test_objective_terms_are_weighted_and_changing_weights_never_retraces(extractor, content_image, style_image):
    cfg = StyleConfig(size=64)
    obj = build_objective(cfg, content_image, [style_image])
    x = tf.constant(style_image[None, :48, :64])
    t1 = {k: float(v[0]) for k, v in obj.loss_terms(x).items()}
    assert t1["total"] == pytest.approx(t1["content"] + t1["style"] + t1["tv"], rel=1e-5)
    traces = obj.tracing_count()
    obj.set_weights(alpha=2e4, beta=3e-2, tv=0.0)
    t2 = {k: float(v[0]) for k, v in obj.loss_terms(x).items()}
    assert obj.tracing_count() == traces
    assert t2["content"] == pytest.approx(2 * t1["content"], rel=1e-4)
    assert t2["style"] == pytest.approx(3 * t1["style"], rel=1e-4)
    assert t2["tv"] == 0.0
    # a batch with one weight pair per image gives each its own terms, still without retracing
    obj.set_weights(alpha=[1e4, 0.0], beta=[1e-2, 1e-2], tv=30.0)
    batch = obj.loss_terms(tf.concat([x, x], 0))
    assert batch["content"].numpy()[1] == 0.0 and batch["content"].numpy()[0] > 0
    np.testing.assert_allclose(batch["style"].numpy()[0], batch["style"].numpy()[1], rtol=1e-6)


def test_objective_gradient_matches_finite_difference(extractor, content_image, style_image):
    obj = build_objective(StyleConfig(size=64), content_image, [style_image])
    x = tf.constant(content_image[None] * 0.8 + 0.1)
    _, grad = obj.value_and_grad(x)
    d = np.zeros_like(x.numpy())
    d[0, 20, 30, 1] = 1e-2
    up = float(obj.loss_terms(x + d)["total"][0])
    down = float(obj.loss_terms(x - d)["total"][0])
    fd = (up - down) / 2e-2
    assert fd == pytest.approx(float(grad[0, 20, 30, 1]), rel=0.05)


def test_objective_rejects_layers_the_extractor_lacks(extractor):
    with pytest.raises(ValueError):
        Objective(extractor, ["block4_conv4"], ["block1_conv1"])


def np_w2(a: np.ndarray, b: np.ndarray) -> float:
    """Return the squared 2-Wasserstein distance between Gaussians fitted to two (H, W, C) feature maps (SciPy)."""
    import scipy.linalg

    fa, fb = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    ma, mb = fa.mean(0), fb.mean(0)
    ca, cb = np.cov(fa, rowvar=False, bias=True), np.cov(fb, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cb)
    cross = scipy.linalg.sqrtm(root @ ca @ root).real
    return float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(cross))


def test_style_statistics_are_the_configs_choices():
    from nst_utils.config import STYLE_STATISTICS
    from nst_utils.objective import STATISTICS

    assert tuple(STATISTICS) == STYLE_STATISTICS and StyleConfig().style_statistic == "gram"
    with pytest.raises(nst_utils.NSTError, match="wasserstein"):
        StyleConfig(style_statistic="gramm")


def test_wasserstein_statistic_matches_scipy_and_ignores_where_things_are():
    from nst_utils.objective import STATISTICS

    w2 = STATISTICS["wasserstein"]
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1, 6, 7, 4)).astype(np.float32)
    b = (rng.normal(size=(1, 5, 8, 4)) * [1.0, 2.0, 0.5, 1.5] + 0.7).astype(np.float32)
    target = w2.target(w2.describe(b))
    assert float(w2.distance(w2.describe(a), target)[0]) == pytest.approx(np_w2(a[0], b[0]), rel=1e-3)
    assert abs(float(w2.distance(w2.describe(b), target)[0])) < 1e-3 * np_w2(a[0], b[0])
    shuffled = b.reshape(1, 40, 4)[:, np.random.default_rng(5).permutation(40)].reshape(b.shape)
    assert abs(float(w2.distance(w2.describe(shuffled), target)[0])) < 1e-3 * np_w2(a[0], b[0])


def test_wasserstein_objective_has_a_finite_gradient_and_a_run_lowers_its_style_term(content_image, style_image):
    cfg = StyleConfig(size=64, style_statistic="wasserstein", alpha=0.0, beta=1.0, tv=0.0)
    obj = build_objective(cfg, content_image, [style_image])
    terms, grad = obj.value_and_grad(tf.constant(content_image[None]))
    assert float(terms["style"][0]) > 0 and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).max() > 0
    r = nst_utils.stylize(content_image, style_image, cfg, steps=15, progress=False)
    assert r.history["style"][-1] < 0.5 * r.history["style"][0]
    mask = np.zeros(content_image.shape[:2], np.float32)
    mask[:, :32] = 1.0  # the mask-guided variant takes the same statistic
    guided = nst_utils.stylize(
        content_image, [style_image, content_image], cfg, steps=4, style_mask=mask, progress=False
    )
    assert np.isfinite(guided.history["total"]).all() and guided.history["total"][-1] < guided.history["total"][0]
