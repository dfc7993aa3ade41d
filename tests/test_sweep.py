"""Batched sweeps: per-image weights, targets shared, and batched runs that match single runs."""

import numpy as np
import pytest
import tensorflow as tf

import nst_utils.optimizers as optimizers
import nst_utils.sweep as sw
from nst_utils import STYLE_LAYERS, NSTError, Objective, stylize
from nst_utils.sweep import cumulative_layer_weights, grid_settings, ratio_settings, sweep

RATIOS = [1e-6, 1e-4]  # beta/alpha, alpha 1e4: beta 1e-2 (the default) and 1


def test_objective_takes_one_style_layer_weight_vector_per_image(extractor, content_image, style_image):
    obj = Objective(extractor, ("block5_conv2",), STYLE_LAYERS)
    obj.set_content(content_image[None])
    obj.set_style([style_image[None]])
    batch = tf.constant(np.stack([style_image[:48]] * 2))
    w = [[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]]
    obj.set_weights(style_layer_weights=w)
    per_image = obj.loss_terms(batch)["style"].numpy()
    traces = obj.tracing_count()
    singles = []
    for row in w:  # the (n_layers,) form still works, and agrees
        obj.set_weights(style_layer_weights=row)
        singles.append(obj.loss_terms(batch[:1])["style"].numpy()[0])
    np.testing.assert_allclose(per_image, singles, rtol=1e-5)
    assert per_image[0] != pytest.approx(per_image[1])
    assert obj.tracing_count() == traces  # changing the shape of the weights never retraces


def test_settings_helpers():
    assert ratio_settings([1e-6, 1e-4], alpha=1e4) == [{"alpha": 1e4, "beta": 1e-2}, {"alpha": 1e4, "beta": 1.0}]
    assert cumulative_layer_weights(3) == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
    g = grid_settings(cumulative_layer_weights(2), [1e-6, 1e-5])
    assert [(s["style_layer_weights"], s["beta"] / s["alpha"]) for s in g] == [
        ((1, 0), pytest.approx(1e-6)),
        ((1, 0), pytest.approx(1e-5)),
        ((1, 1), pytest.approx(1e-6)),
        ((1, 1), pytest.approx(1e-5)),
    ]
    with pytest.raises(ValueError, match="may only change"):
        sweep(np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32), settings=[{"size": 64}])


def test_batched_adam_equals_single_runs(content_image, style_image):
    # Adam is elementwise and each image's loss depends only on that image: the batch is exactly
    # separable, so the only differences are float rounding in batched convolutions (float32 here:
    # bfloat16's coarser rounding would hide a real coupling between images behind a looser tolerance).
    kw = dict(size=64, steps=8, optimizer="adam", progress=False, precision="float32")
    batched = sweep(content_image, style_image, settings=ratio_settings(RATIOS), **kw)
    for r, ratio in zip(batched, RATIOS):
        single = stylize(content_image, style_image, alpha=1e4, beta=ratio * 1e4, **kw)
        np.testing.assert_allclose(r.history["total"], single.history["total"], rtol=1e-4)
        np.testing.assert_allclose(r.image, single.image, atol=2e-3)
        assert r.config.beta == pytest.approx(ratio * 1e4)


def test_batched_lbfgs_matches_stylize(content_image, style_image):
    # Each image has its own projected L-BFGS memory, step size and acceptance (the optimiser stylize
    # uses) and only the loss evaluations are batched, so image i's path depends on image i alone: a
    # batch of two ratios follows the paths of two single stylize runs. The one difference is float
    # rounding in batched vs single-image convolutions (~1e-7 relative), which L-BFGS's line search
    # amplifies over the run, hence rtol 1e-2 / atol 3e-2.
    kw = dict(size=64, steps=20, optimizer="lbfgs", progress=False)
    settings = ratio_settings(RATIOS)
    batched = sweep(content_image, style_image, settings=settings, **kw)
    for r, setting in zip(batched, settings):
        ref = stylize(content_image, style_image, alpha=setting["alpha"], beta=setting["beta"], **kw)
        assert r.steps == ref.steps == 20
        np.testing.assert_allclose(r.history["total"], ref.history["total"], rtol=1e-2)
        assert r.best_loss == pytest.approx(ref.best_loss, rel=1e-2)
        np.testing.assert_allclose(r.image, ref.image, atol=3e-2)
        # and the loss goes down substantially (measured to 1.4-3.4% of the start in 20 evaluations)
        assert r.best_loss < 0.1 * r.history["total"][0], (setting, r.best_loss, r.history["total"][0])
        assert r.config.beta == pytest.approx(setting["beta"])
        if setting is settings[0]:  # a batch of one has no batched rounding: it is exactly stylize
            (one,) = sweep(content_image, style_image, settings=[setting], **kw)
            assert one.history["total"] == ref.history["total"] and np.array_equal(one.image, ref.image)


def test_lbfgs_sweep_stops_on_callback_interrupt_and_nonfinite_loss(monkeypatch, content_image, style_image):
    # a callback's stop, a Ctrl-C raised mid-run and a non-finite loss end the batched run; every image keeps one
    # record per batched evaluation made so far (one compiled call per evaluation here, so callbacks see each step)
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 0.0)
    kw = dict(size=32, steps=10, optimizer="lbfgs", progress=False)
    settings = ratio_settings(RATIOS)
    seen = []
    stopped = sweep(
        content_image,
        style_image,
        settings=settings,
        callback=lambda step, images, terms: seen.append((step, images.shape, len(terms))) or step >= 3,
        **kw,
    )
    assert seen[-1] == (3, (2, 24, 32, 3), 2)
    assert [r.steps for r in stopped] == [3, 3] and stopped[0].message == "stopped by callback"

    def interrupt(step, images, terms):
        if step == 2:
            raise KeyboardInterrupt

    interrupted = sweep(content_image, style_image, settings=settings, callback=interrupt, **kw)
    assert all(r.interrupted and r.steps == 2 for r in interrupted)  # recorded, then the callback raised
    assert all(np.isfinite(r.image).all() and r.best_loss == min(r.history["total"]) for r in interrupted)

    built = []
    real = sw.build_objective
    monkeypatch.setattr(sw, "build_objective", lambda *a, **k: built.append(real(*a, **k)) or built[-1])

    def poison(step, images, terms):
        if step == 2:  # the weights are variables: the compiled loop sees the change at its next evaluation
            built[-1].set_weights(alpha=[1e4, float("nan")])

    nonfinite = sweep(content_image, style_image, settings=settings, callback=poison, **kw)
    assert [r.steps for r in nonfinite] == [2, 2] and "non-finite" in nonfinite[0].message
    assert all(np.isfinite(r.image).all() for r in nonfinite)


def test_lbfgs_sweep_traces_once_across_weight_changes_and_refuses_scipy(content_image, style_image):
    import nst_utils.widgets as widgets

    engine = widgets.PreviewEngine(content_image, style_image, size=32, ratios=RATIOS)
    engine.precompute(steps=3)
    engine.refine(engine.current, steps=3)
    opt_ = engine.lbfgs  # the engine's own L-BFGS, kept across its refinements
    engine.update(1e4, 1.0, 30.0, steps=3)  # new weights, a new run: the same trace
    assert opt_.iterate.experimental_get_tracing_count() == 1
    with pytest.raises(NSTError, match="lbfgs-scipy"):
        sweep(content_image, style_image, size=32, steps=2, optimizer="lbfgs-scipy", settings=ratio_settings(RATIOS))


def test_targets_computed_once_and_split_over_devices_matches(monkeypatch, content_image, style_image):
    calls = []
    real = sw.build_objective
    monkeypatch.setattr(sw, "build_objective", lambda *a, **k: calls.append(1) or real(*a, **k))
    settings = [{"beta": 1e-2}, {"beta": 1.0, "tv": 1.0}, {"style_layer_weights": (1, 0, 0, 0, 0)}]
    kw = dict(size=48, steps=4, optimizer="adam", progress=False)
    one = sweep(content_image, style_image, settings=settings, **kw)
    assert len(calls) == 1 and len(one) == 3 and one[0].timings["devices"] == 1
    # the multi-GPU path (one Objective per device, batch split) exercised on two "devices" of this CPU
    split = sweep(content_image, style_image, settings=settings, devices=["/cpu:0", "/cpu:0"], **kw)
    assert split[0].timings["devices"] == 2
    for a, b in zip(one, split):
        # the same targets and weights: the same first evaluation; later steps may drift a little, because oneDNN
        # picks its convolution kernels by batch size (3 vs 2 + 1) and Adam amplifies gradients' rounding
        np.testing.assert_allclose(a.history["total"][0], b.history["total"][0], rtol=1e-5)
        np.testing.assert_allclose(a.history["total"], b.history["total"], rtol=5e-2)
    assert one[2].config.layer_weights() == (1.0, 0.0, 0.0, 0.0, 0.0)


def test_replica_devices_on_this_machine():
    assert sw.replica_devices(["/cpu:0"]) == ["/cpu:0"]
    if len(tf.config.list_logical_devices("GPU")) < 2:
        assert sw.replica_devices() == [None]


def test_sweep_honours_colour_preservation_like_stylize(content_image, style_image):
    """Sweeps prepare their inputs as stylize does: luminance mode gives back the content's chroma."""
    from nst_utils.images import rgb_to_yiq

    (r,) = sweep(
        content_image,
        style_image,
        size=64,
        steps=4,
        preserve_colors="luminance",
        progress=False,
        settings=[{"beta": 1e-1}],
    )
    chroma_error = np.abs(rgb_to_yiq(r.image)[..., 1:] - rgb_to_yiq(content_image)[..., 1:])
    assert chroma_error.mean() < 0.005  # only pixels clipped back into [0, 1] after recombining may differ
    (plain,) = sweep(content_image, style_image, size=64, steps=4, progress=False, settings=[{"beta": 1e-1}])
    assert (
        np.abs(rgb_to_yiq(plain.image)[..., 1:] - rgb_to_yiq(content_image)[..., 1:]).mean() > 2 * chroma_error.mean()
    )
