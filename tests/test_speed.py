"""The fast path at tiny sizes: coarse-to-fine shapes and tracing, the benchmark end to end. No timed assertions."""

import numpy as np
import pytest
import tensorflow as tf

from nst_utils import NSTError, StyleConfig, bench, stylize
from nst_utils.objective import build_objective
from nst_utils.run import coarse_to_fine, with_detail


def test_clock_interpolates_once_per_call_callbacks():
    clock = bench.Clock()
    clock.points, clock.steps = [(1.0, 9.0), (3.0, 5.0), (13.0, 1.0)], [1, 2, 12]
    assert clock.seconds_at(7) == pytest.approx(8.0) and clock.seconds_at(1) == 1.0
    assert clock.evals_to(3.0, [9.0, 5.0, 4.0, 2.5, 1.0]) == 4


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs-scipy", "lbfgs"])
def test_optimizer_cost_is_measured_on_a_quadratic_of_the_image_shape(optimizer):
    quad = bench.Quadratic((6, 8, 3))
    terms, grad = quad.value_and_grad(tf.fill((1, 6, 8, 3), 0.5))
    assert grad.shape == (1, 6, 8, 3) and float(terms["total"][0]) > 0 and float(terms["style"][0]) == 0
    assert 0 <= bench.optimizer_ms_per_eval(optimizer, (6, 8, 3), evals=5) < 1e4


def test_default_path_is_lbfgs_single_scale():
    cfg = StyleConfig()
    assert cfg.optimizer == "lbfgs" and cfg.scales == ()


@pytest.mark.parametrize("bad", [(64, 32), (16, 16), (8,), (64,), (32.5,)])
def test_scales_are_validated(bad):
    with pytest.raises(NSTError):
        StyleConfig(size=64, scales=bad)


def test_with_detail_keeps_shape_and_range(content_image):
    coarse = content_image[::2, ::2]
    out = with_detail(coarse, content_image)
    assert out.shape == content_image.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    np.testing.assert_allclose(with_detail(np.asarray(coarse), content_image).mean(), content_image.mean(), atol=0.05)


def test_coarse_to_fine_returns_full_size_and_traces_once(content_image, style_image):
    cfg = StyleConfig(size=64, scales=(24, 40), scale_steps=4)
    history = []
    objective = build_objective(cfg.replace(scales=()), content_image, [style_image])  # the coarse scales' one
    x = coarse_to_fine(cfg, content_image, [style_image], content_image.copy(), objective=objective, history=history)
    assert x.shape == content_image.shape and 0 <= x.min() and x.max() <= 1
    assert [s for s, _ in history] == [24, 40] and all(np.isfinite(v) for _, v in history)
    assert objective.value_and_grad.experimental_get_tracing_count() == 1  # no retracing across scales


def test_stylize_with_scales(content_image, style_image):
    r = stylize(content_image, style_image, size=64, steps=6, scales=(32,), scale_steps=4, progress=False)
    assert r.image.shape == content_image.shape and r.steps == 6
    single = stylize(content_image, style_image, size=64, steps=6, progress=False)
    # both histories are the same full-size objective: the coarse start differs from the content start
    assert r.history["total"][0] != single.history["total"][0]


def test_conv_gflop_matches_the_notes():
    assert bench.conv_gflop(265, 512) == pytest.approx(200, rel=0.05)  # notes: ~200 GFLOP per evaluation at 265x512


def test_bench_quick_runs_end_to_end(capsys):
    import json

    assert bench.main(["--size", "48", "--baseline-steps", "4", "--fast-max-evals", "12", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("speedup ") and out[-1].endswith("x")
    float(out[-1].split()[1][:-1])
    assert any(line.startswith("baseline time") for line in out)
    assert any(line.startswith("peak memory") for line in out)
    runs = [json.loads(line) for line in out if line.startswith("{")]
    assert [r["optimizer"] for r in runs] == ["adam", "lbfgs-scipy", "lbfgs"]
    for r in runs:
        assert {
            "run",
            "optimizer",
            "evals_to_target",
            "seconds_to_target",
            "host_ms_per_eval",
            "final_objective",
        } <= set(r)
        assert r["final_objective"] > 0 and (r["evals_to_target"] is None) == (r["seconds_to_target"] is None)
        assert np.isfinite(r["host_ms_per_eval"]) and r["host_ms_per_eval"] >= 0
    assert runs[0]["evals_to_target"] <= 4
    # the fixed cost (first evaluation minus a steady one) and the CPU split are printed per optimiser
    fixed = next(line for line in out if line.startswith("fixed cost"))
    cpu = next(line for line in out if line.startswith("CPU seconds"))
    for r in runs:
        assert r["user_s"] > 0 and r["sys_s"] >= 0 and f"{r['optimizer']} {r['user_s']:.1f} / " in cpu
        if r["fixed_s"] is not None:
            assert f"{r['optimizer']} {r['fixed_s']:.1f} s" in fixed
    assert runs[0]["fixed_s"] is not None  # 4 Adam steps: enough to measure a steady one
    # each L-BFGS ran once more, warm (the kept objective): its fixed cost is printed too
    warm = next(line for line in out if line.startswith("fixed cost of a later run"))
    for r in runs[1:]:
        assert r["warm_fixed_s"] is not None and f"{r['optimizer']} {r['warm_fixed_s']:.2f} s" in warm


def test_lbfgs_runs_with_single_threaded_blas_and_restores_it(content_image, style_image):
    import scipy.optimize  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import threadpool_info

    from nst_utils import stylize

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before, seen = blas_threads(), []
    stylize(
        content_image,
        style_image,
        size=48,
        steps=3,
        progress=False,
        optimizer="lbfgs-scipy",
        callback=lambda step, image, terms: seen.append(blas_threads()),
    )
    assert seen and all(all(n == 1 for n in counts) for counts in seen)
    assert blas_threads() == before


def test_precision_is_validated():
    with pytest.raises(NSTError, match="precision"):
        StyleConfig(precision="float8")
    from nst_utils.model import resolve_precision

    with pytest.raises(NSTError, match="precision"):
        resolve_precision("half")


def test_median_ratio_ignores_bursts_that_hit_one_side(monkeypatch):
    import nst_utils.host as host

    now, calls = [0.0], []  # a clock the two calls advance: no real time is measured
    monkeypatch.setattr(host.time, "perf_counter", lambda: now[0])

    def slow():
        now[0] += 0.010

    def fast():  # call 1 is the warm-up; three of the nine timed calls are hit by a "load burst"
        calls.append(1)
        now[0] += 0.060 if len(calls) in (2, 5, 7) else 0.005

    assert host.median_ratio(slow, fast, pairs=9) == pytest.approx(2.0)  # the mean of the nine would be 1.39
    assert len(calls) == 10


def test_auto_precision_resolves_once_to_a_real_dtype():
    from nst_utils.model import resolve_precision

    first = resolve_precision("auto")
    assert first in ("float32", "bfloat16") and resolve_precision("auto") == first
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"


def test_bfloat16_extractor_keeps_the_first_convolution_in_float32(weights_path, content_image):
    import tensorflow as tf

    from nst_utils.model import get_extractor

    layers = ("block1_conv1", "block3_conv1", "block5_conv2")
    f32 = get_extractor(layers, "max", weights_path, "float32")
    b16 = get_extractor(layers, "max", weights_path, "bfloat16")
    assert f32 is not b16 and b16.precision == "bfloat16"
    a, b = f32(content_image[None]), b16(content_image[None])
    assert all(v.dtype == tf.float32 for v in b.values())  # Grams and losses are computed in float32
    np.testing.assert_array_equal(a["block1_conv1"].numpy(), b["block1_conv1"].numpy())
    for name in layers[1:]:
        x, y = a[name].numpy(), b[name].numpy()
        assert not np.array_equal(x, y)  # really computed in bfloat16 ...
        assert np.linalg.norm(x - y) / np.linalg.norm(x) < 0.05  # ... and close to float32


def test_bfloat16_run_lowers_the_float32_objective(content_image, style_image):
    import tensorflow as tf

    from nst_utils.objective import build_objective

    r = stylize(content_image, style_image, size=64, steps=15, precision="bfloat16", progress=False)
    check = build_objective(StyleConfig(size=64, precision="float32"), content_image, [style_image])

    def f32(img):
        return float(tf.reduce_sum(check.loss_terms(tf.constant(img[None], tf.float32))["total"]))

    assert f32(r.image) < 0.5 * f32(content_image)
    assert f32(r.image) == pytest.approx(r.best_loss, rel=0.05)  # the bf16 objective tracks the float32 one


def test_evaluation_seconds_in_both_precisions(content_image, style_image):
    t32, f32 = bench.evaluation_seconds(content_image, style_image, size=48, precision="float32", reps=1)
    t16, f16 = bench.evaluation_seconds(content_image, style_image, size=48, precision="bfloat16", reps=1)
    assert t32 > 0 and t16 > 0
    assert f16 == pytest.approx(f32, rel=0.05) and f16 != f32  # the same objective, evaluated in two precisions


def test_clock_judges_a_run_by_the_verified_objective():
    # the run's own values say 100, 95, 90; the float32 check says 5% more: the target 95 is first met at 90
    checked = []
    clock = bench.Clock(verify=lambda img: checked.append(img) or img * 1.05, target=95.0)
    for step, value in enumerate([300.0, 100.0, 95.0, 90.0, 80.0], start=1):
        clock(step, value, {"total": value})
    assert checked == [100.0, 95.0, 90.0]  # only new bests within 10% of the target, until one reaches it
    assert clock.evals_to(95.0) == 4 and clock.reached[2] == pytest.approx(94.5)
    assert clock.first_time_at_or_below(95.0) == clock.reached[1] <= clock.points[3][0]
    plain = bench.Clock()
    for step, value in enumerate([300.0, 100.0, 95.0], start=1):
        plain(step, None, {"total": value})
    assert plain.evals_to(95.0) == 3 and plain.evals_to(1.0) is None
