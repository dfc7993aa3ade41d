"""A process keeps the objectives of its last runs: a later run of the same structure traces nothing and gives what a
fresh objective gives; another structure, a guided run and an explicit forget do not reuse one."""

from __future__ import annotations

import numpy as np
from conftest import synthetic_image

from nst_utils import StyleConfig, stylize
from nst_utils import run as run_mod
from nst_utils.inputs import prepare_inputs


def kept() -> tuple:
    """Return the newest kept (objective, L-BFGS)."""
    return run_mod._IDLE[0]


def test_a_second_run_of_the_same_structure_traces_nothing_and_matches_a_fresh_one():
    stylize(synthetic_image(48, 64, 1), synthetic_image(40, 40, 2), size=64, steps=5, progress=False)
    objective, lbfgs = kept()
    traces = (objective.value_and_grad.experimental_get_tracing_count(), lbfgs.iterate.experimental_get_tracing_count())
    assert traces == (1, 1) and lbfgs.shape[0] == 0  # kept without its images
    # another size, other images and other weights: the same traced functions
    content, style = synthetic_image(36, 48, 3), synthetic_image(32, 48, 4)
    again = stylize(content, style, size=48, steps=5, alpha=3e3, beta=0.05, tv=1.0, progress=False)
    assert kept()[0] is objective and kept()[1] is lbfgs
    assert objective.value_and_grad.experimental_get_tracing_count() == 1
    assert lbfgs.iterate.experimental_get_tracing_count() == 1
    run_mod.forget_objectives()
    fresh = stylize(content, style, size=48, steps=5, alpha=3e3, beta=0.05, tv=1.0, progress=False)
    assert kept()[0] is not objective  # forgotten: the fresh run built its own
    for term in ("content", "style", "tv", "total"):
        np.testing.assert_allclose(again.history[term], fresh.history[term], rtol=1e-6)
    np.testing.assert_allclose(again.image, fresh.image, atol=1e-6)


def test_scipy_and_adam_runs_take_the_kept_objective_too():
    stylize(synthetic_image(), synthetic_image(seed=5), size=48, steps=3, optimizer="lbfgs-scipy", progress=False)
    objective, lbfgs = kept()
    assert lbfgs is None  # scipy's run traced no L-BFGS
    stylize(synthetic_image(), synthetic_image(seed=5), size=48, steps=3, optimizer="lbfgs", progress=False)
    assert kept()[0] is objective and kept()[1] is not None  # the L-BFGS run added its own, kept with it
    stylize(synthetic_image(), synthetic_image(seed=5), size=48, steps=3, optimizer="adam", progress=False)
    assert kept()[0] is objective and objective.value_and_grad.experimental_get_tracing_count() == 1


def test_another_structure_builds_its_own():
    stylize(synthetic_image(), synthetic_image(seed=5), size=48, steps=3, progress=False)
    objective = kept()[0]
    stylize(
        synthetic_image(),
        synthetic_image(seed=5),
        size=48,
        steps=3,
        style_layers=("block1_conv1", "block2_conv1"),
        progress=False,
    )
    assert kept()[0] is not objective and run_mod._IDLE[1][0] is objective  # both kept, newest first
    assert not objective.serves(StyleConfig(style_layers=("block1_conv1", "block2_conv1")))
    assert objective.serves(StyleConfig(alpha=1.0, beta=2.0, tv=0.0, size=300))  # weights and size are variables
    assert not objective.serves(StyleConfig(style_statistic="wasserstein"))


def test_a_guided_run_is_not_kept():
    mask = np.zeros((48, 64), np.float32)
    mask[:, :32] = 1.0
    styles = [synthetic_image(seed=6), synthetic_image(seed=7)]
    stylize(synthetic_image(), styles, style_mask=mask, size=64, steps=3, progress=False)
    assert run_mod._IDLE == []


def test_only_the_newest_few_are_kept():
    for layer in ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"):
        stylize(synthetic_image(), synthetic_image(seed=5), size=32, steps=2, style_layers=(layer,), progress=False)
    assert len(run_mod._IDLE) == run_mod.IDLE_KEPT
    assert run_mod._IDLE[0][0].style_layers == ("block5_conv1",)


def test_a_kept_objective_serves_one_run_at_a_time():
    config = StyleConfig(size=48, steps=2)
    stylize(synthetic_image(), synthetic_image(seed=5), config, progress=False)
    objective = kept()[0]
    inputs = prepare_inputs(config, synthetic_image(), synthetic_image(seed=5))
    first, _ = run_mod.take_objective(config, inputs)
    second, _ = run_mod.take_objective(config, inputs)  # the kept one is out: a run beside the first builds its own
    assert first is objective and second is not objective and run_mod._IDLE == []
