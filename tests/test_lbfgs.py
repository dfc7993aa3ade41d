"""The projected L-BFGS in TensorFlow: bounds, known minima, batches, tracing, resume, calls into the compiled loop."""

import numpy as np
import pytest
import tensorflow as tf

import nst_utils.optimizers as optimizers
from nst_utils import StyleConfig, stylize
from nst_utils.checkpoint import load
from nst_utils.lbfgs import ProjectedLBFGS
from nst_utils.tracking import converged

N = 40  # variables per "image" of the quadratic tests


def quadratic(centres: np.ndarray, seed: int = 0, condition: float = 100.0):
    """Return a batched value_and_grad of f_i(x) = 1e3/2 (x_i - c_i)' H (x_i - c_i), one H (condition ~`condition`)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    h = tf.constant((q * np.geomspace(1.0, condition, N)) @ q.T, tf.float32)
    c = tf.constant(centres, tf.float32)
    calls = []

    def value_and_grad(x):
        calls.append(1)  # counted at trace time only: a compiled loop never calls back into Python
        r = tf.reshape(x, c.shape) - c
        return {"total": 500.0 * tf.einsum("bi,ij,bj->b", r, h, r)}, tf.reshape(1e3 * r @ h, tf.shape(x))

    return value_and_grad, h.numpy(), calls


def box_minimum(h: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Return the minimiser of (x - c)' H (x - c) over [0, 1]^N by scipy's L-BFGS-B run to convergence (reference)."""
    import scipy.optimize

    r = scipy.optimize.minimize(
        lambda x: (0.5 * (x - c) @ h @ (x - c), h @ (x - c)),
        np.full(N, 0.5),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * N,
        options={"ftol": 0, "gtol": 1e-12, "maxiter": 5000},
    )
    return r.x


def test_quadratics_inside_and_outside_the_box_reach_the_known_minimum_within_bounds():
    rng = np.random.default_rng(1)
    inside = rng.uniform(0.2, 0.8, N)
    outside = inside.copy()
    outside[:10], outside[10:20] = 1.4, -0.6  # the box minimum has active bounds
    fg, h, _ = quadratic(np.stack([inside, outside]))
    lbfgs = ProjectedLBFGS(fg, (2, N))
    lbfgs.start(np.full((2, N), 0.5, np.float32))
    for _ in range(30):  # bounds hold at every accepted point and every evaluated trial
        lbfgs.iterate(tf.constant(5))
        for v in (lbfgs.x, lbfgs.evaluated, lbfgs.trial):
            assert 0.0 <= v.numpy().min() and v.numpy().max() <= 1.0
    x = lbfgs.best()
    np.testing.assert_allclose(x[0], inside, atol=1e-3)
    ref = box_minimum(h, outside)
    np.testing.assert_allclose(x[1], ref, atol=1e-3)
    assert np.sum((x[1] == 0.0) | (x[1] == 1.0)) >= 15  # the active bounds are met exactly, not approached


def test_kept_products_of_the_memory_equal_the_products_of_its_pairs():
    rng = np.random.default_rng(2)
    fg, _, _ = quadratic(rng.uniform(-0.3, 1.3, (2, N)))
    lbfgs = ProjectedLBFGS(fg, (2, N), memory=3)  # a short memory: slots are overwritten many times
    lbfgs.start(np.full((2, N), 0.5, np.float32))
    for _ in range(8):
        lbfgs.iterate(tf.constant(4))
        state = dict(zip(ProjectedLBFGS.STATE, lbfgs.state()))  # the memory as a checkpoint holds it: (b, m, n)
        s, y = state["s_hist"].astype(np.float64), state["y_hist"].astype(np.float64)
        scale = np.abs(np.einsum("bin,bjn->bij", np.abs(s), np.abs(y))).max()
        np.testing.assert_allclose(lbfgs.sy.numpy(), np.einsum("bin,bjn->bij", s, y), atol=1e-5 * scale)
        np.testing.assert_allclose(
            lbfgs.yy.numpy(), np.einsum("bin,bjn->bij", y, y), atol=1e-5 * np.einsum("bin,bin->b", y, y).max()
        )
    assert lbfgs.count.numpy().min() > 0 and lbfgs.head.numpy().max() > 0  # pairs were stored and the ring moved


def test_batched_equals_single_runs_and_one_trace_per_shape():
    rng = np.random.default_rng(2)
    centres = np.stack([rng.uniform(-0.3, 1.3, N) for _ in range(3)])
    x0 = np.full((3, N), 0.5, np.float32)
    fg, _, calls = quadratic(centres, condition=1e3)
    batch = ProjectedLBFGS(fg, (3, N))
    batch.start(x0)
    terms, n = batch.iterate(tf.constant(60))
    assert int(n) == 60 and terms["total"].shape == (60, 3)
    traced = len(calls)
    for i in range(3):  # each image alone follows the same path: its own memory, step size and acceptance
        single_fg, _, _ = quadratic(centres[i : i + 1], condition=1e3)
        single = ProjectedLBFGS(single_fg, (1, N))
        single.start(x0[i : i + 1])
        t1, _ = single.iterate(tf.constant(60))
        # equal up to float rounding in the batched matmul (~1e-7), which 60 line searches amplify to ~3e-3 at most
        np.testing.assert_allclose(t1["total"].numpy()[:, 0], terms["total"].numpy()[:, i], rtol=1e-2)
        np.testing.assert_allclose(single.best()[0], batch.best()[i], atol=1e-2)
    batch.start(x0 * 0.5)  # a new run and another k: no new trace
    batch.iterate(tf.constant(7))
    assert len(calls) == traced == 1 and batch.iterate.experimental_get_tracing_count() == 1


def test_real_objective_within_a_few_percent_of_scipy(content_image, style_image):
    kw = dict(size=96, steps=40, progress=False, precision="float32")
    ours = stylize(content_image, style_image, optimizer="lbfgs", **kw)
    ref = stylize(content_image, style_image, optimizer="lbfgs-scipy", **kw)
    assert ours.steps == ref.steps == 40
    assert ours.best_loss <= 1.05 * ref.best_loss, (ours.best_loss, ref.best_loss)
    assert 0.0 <= ours.image.min() and ours.image.max() <= 1.0


def test_a_run_of_n_evaluations_makes_about_n_over_k_compiled_calls(monkeypatch, content_image, style_image):
    # the compiled loop makes k evaluations per call (k from the measured rate; a long call target makes k cover the
    # rest of the run), so 60 evaluations are 3 calls: one traces, one measures, one runs the other 58, and nothing
    # but the loss terms comes back per call (on a GPU: no host round trip per evaluation)
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 600.0)
    calls = []
    real = optimizers.drive_lbfgs
    monkeypatch.setattr(optimizers, "drive_lbfgs", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    r = stylize(content_image, style_image, size=32, steps=60, progress=False)
    assert r.steps == 60 and calls == [3]
    assert optimizers.next_call_evals(5, 0.05, calls=3, seconds_per_call=1.0) == 100  # k = 1 s / seconds per evaluation
    assert optimizers.next_call_evals(5, 0.05, calls=1, seconds_per_call=1.0) == 1  # the first calls trace and measure


def test_resume_of_an_interrupted_run_equals_the_uninterrupted_run(monkeypatch, tmp_path, content_image, style_image):
    monkeypatch.setattr(
        optimizers, "CALL_SECONDS", 0.0
    )  # one evaluation per call: the interrupt lands at step 5 exactly

    def stop_at_5(step, image, terms):
        if step == 5:
            raise KeyboardInterrupt

    kw = dict(size=48, steps=12, progress=False)
    whole = stylize(content_image, style_image, **kw)
    cut = stylize(content_image, style_image, callback=stop_at_5, output=tmp_path / "o.png", **kw)
    assert cut.interrupted and cut.steps == 5 and len(load(cut.checkpoint).optimizer_state) == len(ProjectedLBFGS.STATE)
    resumed = stylize(resume=cut.checkpoint, progress=False)
    np.testing.assert_allclose(resumed.history["total"], whole.history["total"], rtol=1e-5)
    np.testing.assert_allclose(resumed.image, whole.image, atol=1e-5)


def test_tol_stops_a_converged_run(content_image, style_image):
    r = stylize(content_image, style_image, size=32, steps=400, tol=0.05, progress=False)
    assert 20 < r.steps < 400 and r.message.startswith("converged")
    assert converged([10.0] * 21 + [9.99], 0.01) and not converged([10.0] * 21 + [8.0], 0.01)
    with pytest.raises(Exception, match="tol"):
        StyleConfig(tol=-1.0)


def test_save_every_sees_its_steps_with_long_calls(monkeypatch, tmp_path, content_image, style_image):
    monkeypatch.setattr(optimizers, "CALL_SECONDS", 600.0)  # calls would otherwise run to the end in one go
    out = tmp_path / "o.png"
    r = stylize(content_image, style_image, size=32, steps=7, output=out, save_every=3, progress=False)
    assert r.steps == 7 and sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "o_0003.png", "o_0006.png"]


def bowl(x):
    """Return a separable value_and_grad for images of any (batch, ...) shape: f_i = 500 sum_k a_k (x_ik - 0.3)^2."""
    flat = tf.reshape(x, (tf.shape(x)[0], -1))
    a = tf.linspace(1.0, 100.0, tf.shape(flat)[1])  # curvature 1 to 100 along the pixels
    r = flat - 0.3
    return {"total": 500.0 * tf.reduce_sum(a * r * r, axis=1)}, tf.reshape(1e3 * a * r, tf.shape(x))


def test_one_trace_serves_every_image_size_and_batch():
    rng = np.random.default_rng(3)
    kept = ProjectedLBFGS(bowl, (1, 8, 6, 3), memory=5)
    for shape in [(1, 8, 6, 3), (1, 20, 16, 3), (3, 8, 6, 3), (1, 8, 6, 3)]:
        x0 = rng.uniform(size=shape).astype(np.float32)
        fresh = ProjectedLBFGS(bowl, shape, memory=5)  # the reference: an optimiser made for this shape
        for opt in (kept, fresh):
            opt.start(x0)
            for _ in range(6):
                opt.iterate(tf.constant(5))
        assert kept.best().shape == shape and kept.last().shape == shape
        np.testing.assert_allclose(
            kept.best(), fresh.best(), rtol=1e-6, atol=1e-7
        )  # the same run, whatever came before
        np.testing.assert_allclose(kept.best(), 0.3, atol=0.05)
        assert fresh.restore(kept.state()) and not ProjectedLBFGS(bowl, (2,) + shape[1:]).restore(kept.state())
    assert kept.iterate.experimental_get_tracing_count() == 1


def test_a_batch_follows_each_image_s_single_path_exactly():
    """Images whose line searches and memories diverge (different heads and counts) take, batched, bit for bit the
    path each takes alone: every per-image reduction rounds the same whatever the batch size (a batched matmul did
    not, at this n)."""
    n, rng = 9216, np.random.default_rng(3)
    centres = rng.uniform(-0.3, 1.3, (2, n)).astype(np.float32)
    stiffness = np.array([1.0, 50.0], np.float32)

    def objective(c: np.ndarray, w: np.ndarray):
        c, w = tf.constant(c), tf.constant(w)

        def value_and_grad(x):
            r = x - c
            f = tf.reduce_sum(w[:, None] * r**4 + 0.1 * r**2 + tf.sin(5 * x), 1)
            return {"total": f}, 4 * w[:, None] * r**3 + 0.2 * r + 5 * tf.cos(5 * x)

        return value_and_grad

    batch = ProjectedLBFGS(objective(centres, stiffness), (2, n), memory=20)
    batch.start(np.full((2, n), 0.5, np.float32))
    together, _ = batch.iterate(tf.constant(60))
    assert batch.head.numpy()[0] != batch.head.numpy()[1]  # the two memories went different ways
    for i in range(2):
        one = ProjectedLBFGS(objective(centres[i : i + 1], stiffness[i : i + 1]), (1, n), memory=20)
        one.start(np.full((1, n), 0.5, np.float32))
        alone, _ = one.iterate(tf.constant(60))
        np.testing.assert_array_equal(together["total"].numpy()[:, i], alone["total"].numpy()[:, 0])
