"""The engine: both optimisers lower the objective, seeds reproduce, the best image is kept."""

import numpy as np
import pytest

import nst_utils.optimizers as optimizers
import nst_utils.run as opt
from nst_utils import StyleConfig, stylize
from nst_utils.objective import initial_image


@pytest.mark.parametrize("optimizer,steps", [("lbfgs", 15), ("adam", 15)])
def test_optimizers_lower_the_objective(content_image, style_image, optimizer, steps):
    r = stylize(content_image, style_image, size=64, steps=steps, optimizer=optimizer, progress=False)
    h = r.history["total"]
    assert len(h) == steps
    assert r.best_loss == min(h)
    assert min(h) < 0.5 * h[0], f"{optimizer}: {h[0]:.3g} -> {min(h):.3g}"
    assert r.image.shape == (48, 64, 3) and 0 <= r.image.min() and r.image.max() <= 1
    for term in ("content", "style", "tv"):
        assert len(r.history[term]) == steps
    assert r.history["content"][0] == pytest.approx(0.0, abs=1e-3)  # content init starts on the content


def test_same_seed_same_output(content_image, style_image):
    kw = dict(size=64, steps=6, init="noise", seed=7, progress=False)
    a, b = stylize(content_image, style_image, **kw), stylize(content_image, style_image, **kw)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.history == b.history
    c = stylize(content_image, style_image, **{**kw, "seed": 8})
    assert not np.array_equal(a.image, c.image)


def test_inits(content_image, style_image):
    cfg = StyleConfig(size=64, init="style")
    assert initial_image(cfg, content_image, style_image).shape == content_image.shape
    noise = initial_image(cfg.replace(init="noise", seed=1), content_image, style_image)
    assert 0.4 < noise.mean() < 0.6 and noise.std() > 0.2


@pytest.mark.parametrize("optimizer", ["lbfgs", "lbfgs-scipy"])
def test_callback_sees_every_step_and_can_stop(monkeypatch, content_image, style_image, optimizer):
    # ours calls back once per compiled call of k evaluations (about once a second); k = 1 here
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 0.0)
    seen = []

    def cb(step, image, terms):
        seen.append((step, terms["total"]))
        return step == 4

    r = stylize(content_image, style_image, size=64, steps=20, progress=False, callback=cb, optimizer=optimizer)
    assert [s for s, _ in seen] == [1, 2, 3, 4] and r.steps == 4
    assert r.message == "stopped by callback"


def test_interrupt_keeps_best_image(content_image, style_image):
    def cb(step, image, terms):
        if step == 5:
            raise KeyboardInterrupt

    r = stylize(content_image, style_image, size=64, steps=20, optimizer="adam", progress=False, callback=cb)
    assert r.interrupted and r.steps == 5 and r.best_loss == min(r.history["total"])


@pytest.mark.parametrize("optimizer", ["lbfgs", "lbfgs-scipy", "adam"])
def test_nan_loss_stops_and_keeps_last_good_image(monkeypatch, content_image, style_image, optimizer):
    # the callback poisons the objective's weight (a variable, so it reaches the compiled loop too) after step 3
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 0.0)
    built = []
    real = opt.take_objective

    def take(*a, **k):
        objective, _ = real(*a, **k)
        built.append(objective)
        return objective, None  # an L-BFGS traced afresh

    monkeypatch.setattr(opt, "take_objective", take)
    monkeypatch.setattr(opt, "keep_objective", lambda plan: None)  # the poisoned objective serves no later run

    def cb(step, image, terms):
        if step == 3:
            built[0].set_weights(alpha=float("nan"))

    r = stylize(content_image, style_image, size=64, steps=10, progress=False, callback=cb, optimizer=optimizer)
    assert r.steps == 3 and "loss became nan" in r.message and np.isfinite(r.image).all()
    assert r.best_loss == min(r.history["total"])


@pytest.mark.parametrize("optimizer", ["lbfgs", "lbfgs-scipy", "adam"])
def test_the_callback_sees_one_hxwx3_image(content_image, style_image, optimizer):
    seen = []
    r = stylize(
        content_image,
        style_image,
        size=48,
        steps=4,
        optimizer=optimizer,
        progress=False,
        callback=lambda step, image, terms: seen.append(np.shape(image)),
    )
    assert seen and all(shape == r.image.shape for shape in seen), seen  # as documented, whatever the optimiser
