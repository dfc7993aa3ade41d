"""The tiled evaluation gives the untiled loss terms and gradient (float32 rounding), and so the same run."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import synthetic_image

from nst_utils import NSTError
from nst_utils.config import CONTENT_LAYERS, STYLE_LAYERS, StyleConfig
from nst_utils.model import resolve_precision
from nst_utils.objective import build_objective, new_objective
from nst_utils.optimizers import run_lbfgs
from nst_utils.tiling import TiledObjective, min_halo, receptive_field, tile_stride
from nst_utils.tracking import Tracker

# Layers up to block3: a halo of 16 px, so 32-px tiles of a ~100-px image read only part of it (the default layers'
# 96-px halo reaches across these small test images from every tile).
SHALLOW = {"content_layers": ("block3_conv2",), "style_layers": ("block1_conv1", "block2_conv1", "block3_conv1")}


def evaluate(objective, image: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Return (terms of image 0, gradient) of `objective` at a (H, W, 3) image."""
    terms, grad = objective.value_and_grad(tf.constant(image[None]))
    return {k: float(v[0]) for k, v in terms.items()}, grad.numpy()


def assert_same(untiled, tiled, image: np.ndarray, grad_tol: float = 1e-5, rel: float = 1e-4) -> None:
    """Assert both objectives give the same terms (to `rel`) and gradient (to grad_tol of its largest entry)."""
    terms, grad = evaluate(untiled, image)
    tiled_terms, tiled_grad = evaluate(tiled, image)
    for name, value in terms.items():
        assert tiled_terms[name] == pytest.approx(value, rel=rel, abs=1e-6), name
    scale = np.abs(grad).max()
    assert scale > 0
    np.testing.assert_allclose(tiled_grad, grad, rtol=rel, atol=grad_tol * scale)


def test_halo_and_stride_come_from_the_layers():
    assert receptive_field("block5_conv1") == 156 and receptive_field("block5_conv2") == 188  # part 6's numbers
    assert tile_stride(CONTENT_LAYERS + STYLE_LAYERS) == 16 and tile_stride(("block5_pool",)) == 32
    # (receptive field - stride) / 2 on each side, rounded up to the stride
    assert min_halo(CONTENT_LAYERS + STYLE_LAYERS) == 96 and min_halo(("block5_conv1",)) == 80
    assert min_halo(SHALLOW["content_layers"]) == 16


CASES = {
    "gram": ({}, 1, False),
    "wasserstein": ({"style_statistic": "wasserstein"}, 1, False),
    "two blended styles": ({}, 2, False),
    "normalised, average pooling": ({"normalize_vgg": True, "pooling": "avg", "alpha": 1.0, "beta": 3.0}, 1, False),
    "mask, two styles": ({}, 2, True),
    "shallow gram": (SHALLOW, 1, False),
    "shallow wasserstein, mask": (SHALLOW | {"style_statistic": "wasserstein"}, 2, True),
}


@pytest.mark.parametrize("case", CASES)
def test_tiled_equals_untiled(case):
    settings, n_styles, masked = CASES[case]
    shape = (98, 76) if "content_layers" in settings else (96, 128)  # tiles of 32 or 48 px: uneven border tiles
    content = synthetic_image(*shape, seed=1)
    styles = [synthetic_image(64, 64, seed=2 + i) for i in range(n_styles)]
    mask = None
    if masked:
        mask = np.zeros(shape, np.float32)
        mask[:, : shape[1] // 3] = 1.0
        mask[: shape[0] // 2] = 0.5
    config = StyleConfig(size=max(shape), precision="float32", **settings)
    blend = [0.7, 0.3] if n_styles == 2 and not masked else None
    untiled = build_objective(config, content, styles, blend, mask=mask)
    tiled = TiledObjective(untiled, 32 if "content_layers" in settings else 48)
    # stride 4 up to block3: rows of 32, 32, 34 px by columns of 24, 24, 28; stride 16: rows 48, 48 by columns 32, 48,
    # 48
    assert tiled.tiles(*shape) == (9 if "content_layers" in settings else 6)
    assert_same(untiled, tiled, synthetic_image(*shape, seed=5))


@pytest.mark.parametrize("statistic", ["gram", "wasserstein"])
def test_targets_computed_tile_by_tile_equal_the_whole_images(statistic):
    shape = (98, 76)
    content, styles = synthetic_image(*shape, seed=1), [synthetic_image(90, 70, 2), synthetic_image(50, 80, 3)]
    config = StyleConfig(size=98, precision="float32", style_statistic=statistic, **SHALLOW)
    whole = build_objective(config, content, styles, [0.7, 0.3])
    tiled = TiledObjective(new_objective(config), 32)
    tiled.aim(config, content, styles, [0.7, 0.3])
    assert tiled.tiles(90, 70) > 1 and tiled.tiles(50, 80) > 1  # each style image is cut too
    for name, target in whole.content_targets.items():
        np.testing.assert_allclose(tiled.objective.content_targets[name].numpy(), target.numpy(), rtol=1e-5, atol=1e-5)
    for image in styles:  # the statistics (position averages: exact); W2's covariance target then cancels digits
        described, whole_described = tiled.describe_image(image[None]), whole.describe_image(image[None])
        for name in whole.style_layers:
            for mine, theirs in zip(tf.nest.flatten(described[name]), tf.nest.flatten(whole_described[name])):
                scale = np.abs(theirs.numpy()).max()
                np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5 * scale)
    # W2's targets subtract mean^2 from the second moment: float32 keeps fewer digits of what is left
    rounding = {"gram": (1e-5, 1e-4), "wasserstein": (1e-3, 1e-3)}[statistic]
    assert_same(whole, tiled, synthetic_image(*shape, seed=5), *rounding)


def test_an_image_in_one_tile_is_evaluated_untiled():
    content, style = synthetic_image(96, 128, seed=1), synthetic_image(64, 64, 2)
    untiled = build_objective(StyleConfig(size=128, precision="float32"), content, [style])
    tiled = TiledObjective(untiled, 512)
    assert tiled.tiles(96, 128) == 1
    terms, grad = evaluate(untiled, content)
    one_tile_terms, one_tile_grad = evaluate(tiled, content)
    for name, value in terms.items():  # the Objective's own graph, inside tf.cond (only op scheduling may differ)
        assert one_tile_terms[name] == pytest.approx(value, rel=1e-6), name
    np.testing.assert_allclose(one_tile_grad, grad, rtol=1e-5, atol=1e-6 * np.abs(grad).max())
    small_enough = TiledObjective(untiled, 48, whole_pixels=96 * 128)  # fits untiled (a coarse scale): whole
    assert small_enough.tiles(96, 128) == 6 and small_enough.whole(96, 128) and not small_enough.whole(97, 128)
    whole_terms, whole_grad = evaluate(small_enough, content)
    assert whole_terms["total"] == pytest.approx(terms["total"], rel=1e-6)
    np.testing.assert_allclose(whole_grad, grad, rtol=1e-5, atol=1e-6 * np.abs(grad).max())


def test_a_narrower_halo_than_the_receptive_field_changes_the_gradient():
    shape = (98, 76)
    content, style, image = (synthetic_image(*shape, seed=1), synthetic_image(64, 64, 2), synthetic_image(*shape, 5))
    untiled = build_objective(StyleConfig(size=98, precision="float32", **SHALLOW), content, [style])
    exact = TiledObjective(untiled, 32)
    assert_same(untiled, exact, image)
    narrow = TiledObjective(untiled, 32, halo=exact.halo - exact.stride)
    _, grad = evaluate(untiled, image)
    _, wrong = evaluate(narrow, image)
    assert np.abs(wrong - grad).max() > 1e-2 * np.abs(grad).max()


def test_bfloat16_tiled_is_close_to_untiled():
    shape = (98, 76)
    config = StyleConfig(size=98, precision="bfloat16", **SHALLOW)
    untiled = build_objective(config, synthetic_image(*shape, seed=1), [synthetic_image(64, 64, 2)])
    image = synthetic_image(*shape, seed=5)
    terms, grad = evaluate(untiled, image)
    tiled_terms, tiled_grad = evaluate(TiledObjective(untiled, 32), image)
    assert tiled_terms["total"] == pytest.approx(terms["total"], rel=1e-3)
    # bfloat16's 8-bit mantissa: the backward pass rounds differently for a tile's share of the gradient
    np.testing.assert_allclose(tiled_grad, grad, atol=2e-2 * np.abs(grad).max())


def test_a_tiled_run_makes_the_same_picture():
    shape = (96, 128)
    content, style = synthetic_image(*shape, seed=1), synthetic_image(64, 64, 2)
    untiled = build_objective(StyleConfig(size=128, precision="float32"), content, [style])
    tiled = TiledObjective(untiled, 48)
    pictures, histories = [], []
    for objective in (untiled, tiled):
        tracker = Tracker(5, None, False, "test")
        run_lbfgs(objective, content, 5, tracker)
        pictures.append(tracker.best_image)
        histories.append(np.array(tracker.history["total"]))
    assert len(histories[1]) == 5 and histories[1][-1] < histories[1][0]
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)
    assert np.abs(pictures[1] - content).max() > 1e-2  # the run moved the picture ...
    # ... and both runs alike: float32 rounding moves a few pixels at the [0, 1] bounds' edge by ~1e-4, so the same
    # picture to a quarter of an 8-bit level, and on average to 1e-5
    difference = np.abs(pictures[1] - pictures[0])
    assert difference.max() < 1e-3 and difference.mean() < 1e-5
    assert tiled.tracing_count() == 1  # the L-BFGS graph traced value_and_grad once


def test_one_trace_for_every_image_size_and_weight():
    untiled = build_objective(
        StyleConfig(size=76, precision="float32", **SHALLOW), synthetic_image(98, 76, 1), [synthetic_image(64, 64, 2)]
    )
    tiled = TiledObjective(untiled, 32)
    for shape in ((98, 76), (64, 40)):
        untiled.set_content(synthetic_image(*shape, seed=1)[None])
        tiled.set_weights(alpha=2e4)
        assert_same(untiled, tiled, synthetic_image(*shape, seed=5))
    assert tiled.value_and_grad.experimental_get_tracing_count() == 1


def test_tiles_narrower_than_the_stride_are_refused():
    untiled = build_objective(
        StyleConfig(size=64, precision="float32"), synthetic_image(64, 64, 1), [synthetic_image(64, 64, 2)]
    )
    with pytest.raises(NSTError, match="at least 16"):
        TiledObjective(untiled, 8)
    assert TiledObjective(untiled, 40).tile == 32  # rounded down to the stride


def test_stylize_tile_gives_the_untiled_picture_and_resumes(tmp_path):
    from nst_utils import stylize

    content, style = synthetic_image(96, 128, seed=1), synthetic_image(64, 64, 2)
    settings = {"size": 128, "steps": 5, "precision": "float32", "progress": False}
    untiled = stylize(content, style, **settings)

    def stop_at_2(step, image, terms):
        if step >= 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "tiled.ckpt.npz"
    stopped = stylize(content, style, tile=48, callback=stop_at_2, checkpoint=ckpt, **settings)
    assert stopped.interrupted and stopped.config.tile == 48 and ckpt.is_file()
    resumed = stylize(resume=ckpt, progress=False)  # goes on tiled, with the checkpoint's config
    assert resumed.config.tile == 48 and resumed.steps == 5
    np.testing.assert_allclose(resumed.history["total"], untiled.history["total"], rtol=1e-4)
    difference = np.abs(resumed.image - untiled.image)
    assert difference.max() < 1e-3 and difference.mean() < 1e-5


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_tile_must_be_a_whole_number_of_px(bad):
    with pytest.raises(NSTError, match="tile must be a whole number"):
        StyleConfig(tile=bad)
    assert StyleConfig(tile=0).tile == 0 and StyleConfig().tile is None


def test_tile_zero_never_tiles():
    from nst_utils.cli import build_parser
    from nst_utils.run import plan

    assert build_parser().parse_args(["stylize", "--tile", "0"]).settings["tile"] == 0
    content, style = synthetic_image(64, 64, 1), synthetic_image(64, 64, 2)
    assert type(plan(content, style, StyleConfig(size=64, tile=0)).objective).__name__ == "Objective"
    assert isinstance(plan(content, style, StyleConfig(size=64, tile=32)).objective, TiledObjective)


def test_a_run_too_large_for_memory_is_tiled_automatically(monkeypatch, capsys):
    from nst_utils import memory, stylize

    content, style = synthetic_image(192, 256, seed=1), synthetic_image(64, 64, 2)
    settings = {"size": 256, "steps": 4, "precision": "float32", **SHALLOW}
    layers = SHALLOW["content_layers"] + SHALLOW["style_layers"]
    untiled_need = memory.estimate_bytes(192, 256, layers)
    tiled_need = memory.estimate_bytes(192, 256, layers, tile=memory.MIN_TILE, content_layers=SHALLOW["content_layers"])
    assert tiled_need < untiled_need
    untiled = stylize(content, style, progress=False, **settings)
    assert untiled.config.tile is None and untiled.memory["tile"] == 0
    monkeypatch.setenv(memory.BUDGET_ENV, str((tiled_need + untiled_need) / 2 / 2**30))
    tiled = stylize(content, style, progress=True, **settings)
    err = capsys.readouterr().err
    note = next(line for line in err.splitlines() if "tiles of" in line)
    assert note.startswith("nst: a 256x192 run needs about") and "--tile 0 forbids tiles" in note
    assert 128 <= tiled.config.tile < 256 and tiled.memory["tile"] == tiled.config.tile
    assert tiled.memory["estimate_gib"] * 2**30 <= (tiled_need + untiled_need) / 2 + 2**22
    np.testing.assert_allclose(tiled.history["total"], untiled.history["total"], rtol=1e-4)
    with pytest.raises(NSTError, match="needs about .* GiB of memory but only"):
        stylize(content, style, progress=False, tile=0, **settings)  # tiles forbidden: refused as before


def test_the_lbfgs_history_shortens_at_large_sizes_and_a_resume_keeps_its_own(tmp_path, monkeypatch):
    from nst_utils import memory, stylize

    assert memory.history(2048, 2048) == 20 and memory.history(4096, 4096) == 5 and memory.history(8192, 8192) == 3
    content, style = synthetic_image(96, 128, seed=1), synthetic_image(64, 64, 2)
    settings = {"size": 128, "steps": 6, "precision": "float32", "progress": False, "tile": 48}
    monkeypatch.setattr(memory, "HISTORY_BYTES", 4 * 2 * 96 * 128 * 3 * 4)  # room for 4 pairs at this size

    def stop_at_3(step, image, terms):
        if step >= 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "short.ckpt.npz"
    stopped = stylize(content, style, callback=stop_at_3, checkpoint=ckpt, **settings)
    assert stopped.interrupted and stopped.memory["lbfgs_history"] == 4
    monkeypatch.undo()  # this machine would now keep 20 pairs: the resumed run keeps the checkpoint's 4
    code, err = nst_in_process_resume(ckpt, tmp_path / "out.png")
    assert code == 0, err
    log = json.loads((tmp_path / "out.json").read_text())
    assert log["memory"]["lbfgs_history"] == 4 and log["memory"]["tile"] == 48 and log["config"]["tile"] == 48
    assert len(log["history"]["total"]) == 6 and (tmp_path / "out.png").is_file()


def nst_in_process_resume(ckpt, out) -> tuple[int, str]:
    """Return (exit code, stderr) of `nst stylize --resume CKPT -o OUT --log OUT.json -q` run in this process."""
    import contextlib
    import io

    from nst_utils import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        log = str(out.with_suffix(".json"))
        code = cli.main(["stylize", "--resume", str(ckpt), "-o", str(out), "--log", log, "-q"])
    return code, err.getvalue()


def test_info_says_the_largest_picture_untiled_and_in_tiles(monkeypatch, capsys):
    from nst_utils import cli, memory

    monkeypatch.setenv(memory.BUDGET_ENV, "6")
    assert cli.main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("memory:"))
    untiled = int(line.split("untiled about ")[1].split()[0])
    tiled = int(line.split("px about ")[1].split()[0])
    budget = 6 * 2**30
    precision = resolve_precision("auto")  # what `nst info` counts: bfloat16 keeps half-size activations

    def need(side: int) -> int:
        return memory.estimate_bytes(side, side, precision=precision)

    assert need(untiled) <= budget < need(untiled + 1)
    assert 2048 <= tiled and tiled > 1.5 * untiled  # the goal: 2048x2048 within 6 GiB, tiled
    assert memory.fit(2048, 2048, StyleConfig(size=2048)).tile == 512  # and a 2048 px run is tiled, not refused


def test_coarse_to_fine_carries_a_tiled_run_up_from_untiled_scales():
    from nst_utils import stylize

    content, style = synthetic_image(96, 128, seed=1), synthetic_image(64, 64, 2)
    settings = {"size": 128, "steps": 3, "scales": (48, 96), "scale_steps": 3, "precision": "float32"}
    untiled = stylize(content, style, progress=False, **settings)
    tiled = stylize(content, style, progress=False, tile=48, **settings)  # 48 px: one tile; 96 and 128 px: several
    assert tiled.config.tile == 48 and tiled.steps == untiled.steps == 3
    np.testing.assert_allclose(tiled.history["total"], untiled.history["total"], rtol=1e-4)
    assert np.abs(tiled.image - untiled.image).mean() < 1e-5
