"""Batched sweeps: optimise one image per weight setting in a single run, sharing the targets.

`sweep` stylizes a *batch*: image i gets its own alpha, beta, TV weight and/or style-layer
weight vector (Objective holds them as per-image vectors), while the content features and
style Grams are computed once and broadcast over the batch. Each image's loss depends only
on that image, so the summed objective is separable:

- Adam is elementwise, so a batched Adam run equals the single runs up to float rounding.
- L-BFGS on the *joint* vector (scipy on all pixels of all images) is not fair: one line
  search and one curvature memory are shared, so the worst-conditioned image sets the step
  for all, and images whose loss scale differs by orders of magnitude (block1-only vs
  all-layer style, beta/alpha a decade apart) barely move. So each image gets its own
  `scipy.optimize.minimize(method="L-BFGS-B")` with the options `optimize.run_lbfgs` uses
  (own memory, own line search, [0, 1] bounds, restarted from its best point if scipy stops
  early), each in its own thread. The threads meet at a barrier on every function evaluation
  and the calling thread evaluates all their points as one batch, so the evaluations stay
  batched while image i's path depends on image i alone: a batched sweep equals `stylize` per
  setting up to float rounding in batched convolutions (tested). TensorFlow, the progress bar
  and the callback run in the calling thread; the budget (`steps` batched evaluations), a
  callback's stop, a non-finite loss and Ctrl-C end every thread.

With more than one GPU the batch is split over the devices that
`tf.distribute.MirroredStrategy` would mirror over (one Objective per device, evaluated
concurrently); on a CPU or a single GPU everything runs in one batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.optimize
import tensorflow as tf
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .config import StyleConfig
from .controls import prepare_inputs
from .losses import Objective
from .model import FeatureExtractor
from .optimize import TERMS, Result, _Stop, build_objective, first_step_scale, initial_image
from .images import resize

# callback(step, images BxHxWx3, per-image terms as floats) -> True to stop early
SweepCallback = Callable[[int, np.ndarray, list], "bool | None"]


def ratio_settings(ratios: Sequence[float], alpha: float = 1e4) -> list[dict]:
    """Return one setting per beta/alpha ratio, alpha fixed: [{"alpha": a, "beta": r * a}, ...]."""
    return [{"alpha": float(alpha), "beta": float(r) * float(alpha)} for r in ratios]


def cumulative_layer_weights(n_layers: int) -> list[tuple[float, ...]]:
    """Return [1,0,0..], [1,1,0..], ..., [1,1,..1]: style from the first k layers (Gatys et al. Fig. 3 rows)."""
    return [tuple(1.0 if j <= k else 0.0 for j in range(n_layers)) for k in range(n_layers)]


def grid_settings(layer_weights: Sequence[Sequence[float]], ratios: Sequence[float], alpha: float = 1e4) -> list[dict]:
    """Return the settings of a rows x columns grid (row-major): rows = layer weights, columns = ratios."""
    return [{"style_layer_weights": tuple(w), **s} for w in layer_weights for s in ratio_settings(ratios, alpha)]


def replica_devices(devices: Sequence[str] | None = None) -> list[str | None]:
    """Return the devices to split a batch over: `devices`, else MirroredStrategy's GPUs if >1, else [None]."""
    if devices is not None:
        return list(devices) or [None]
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < 2:
        return [None]
    strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
    return list(strategy.extended.worker_devices)


class _Batch:
    """Evaluates the batched objective, split over one Objective per device."""

    def __init__(self, config: StyleConfig, configs: Sequence[StyleConfig], content: np.ndarray,
                 styles: Sequence[np.ndarray], blend, weights, devices: Sequence[str | None]):
        n = len(configs)
        self.chunks = [c for c in np.array_split(np.arange(n), min(len(devices), n)) if len(c)]
        self.objectives: list[Objective] = []
        for dev, idx in zip(devices, self.chunks):
            if dev is None:
                obj = build_objective(config, content, styles, blend, weights)
            else:
                with tf.device(dev):
                    ext = FeatureExtractor(config.content_layers + config.style_layers, weights, config.pooling, config.precision,
                                           config.normalize_vgg)
                    obj = Objective(ext, config.content_layers, config.style_layers)
                    obj.set_content(content[None])
                    obj.set_style([s[None] for s in styles], blend)
            part = [configs[i] for i in idx]
            obj.set_weights(alpha=[c.alpha for c in part], beta=[c.beta for c in part], tv=[c.tv for c in part],
                            style_layer_weights=[c.layer_weights() for c in part])
            self.objectives.append(obj)
        self.devices = list(devices)[: len(self.chunks)]

    def __call__(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Return ({term: per-image values}, gradient of each image's own total) for a BxHxWx3 batch."""
        outs = []
        for dev, obj, idx in zip(self.devices, self.objectives, self.chunks):
            with tf.device(dev) if dev is not None else contextlib.nullcontext():
                outs.append(obj.value_and_grad(tf.constant(images[idx], tf.float32)))  # async on GPUs
        terms = {k: np.concatenate([np.asarray(t[k], np.float64).reshape(-1) for t, _ in outs]) for k in TERMS}
        grad = np.concatenate([g.numpy() for _, g in outs])
        return terms, grad

    def tracing_count(self) -> int:
        """Return the summed tracing count of the objectives (one trace per objective and function)."""
        return sum(o.tracing_count() for o in self.objectives)


class _BatchTracker:
    """Per-image histories and best images, a progress bar and the callback."""

    def __init__(self, n: int, steps: int, callback: SweepCallback | None, progress: bool, desc: str):
        self.history = [{k: [] for k in TERMS} for _ in range(n)]
        self.best_loss = np.full(n, np.inf)
        self.best_image: list[np.ndarray | None] = [None] * n
        self.callback = callback
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
        self.evals = 0
        self.stop = False
        self.message = ""

    def record(self, images: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        """Record one batched evaluation (images are the points the terms describe)."""
        total = terms["total"]
        if not np.all(np.isfinite(total)):
            self.stop = True
            self.message = f"loss became non-finite at step {self.evals + 1}; kept the best images so far"
            return
        self.evals += 1
        for i in range(len(total)):
            for k in TERMS:
                self.history[i][k].append(float(terms[k][i]))
            if total[i] < self.best_loss[i]:
                self.best_loss[i], self.best_image[i] = float(total[i]), images[i].copy()
        self.bar.update(1)
        if self.callback is not None:
            per_image = [{k: float(terms[k][i]) for k in TERMS} for i in range(len(total))]
            if self.callback(self.evals, images, per_image):
                self.stop, self.message = True, "stopped by callback"


class _Lockstep:
    """Runs one scipy L-BFGS-B per image, each in its own thread, with every evaluation batched.

    Each worker posts its point and waits at a barrier that the calling thread also joins; the
    caller then evaluates all points as one batch, records it, and releases the workers with
    their own value and gradient. TensorFlow, the tracker and the callback therefore run in the
    caller's thread (where KeyboardInterrupt arrives); the workers only run scipy.
    """

    def __init__(self, batch: _Batch, x0: np.ndarray, steps: int, tracker: _BatchTracker, maxcor: int = 20):
        self.batch, self.x0, self.steps, self.tracker, self.maxcor = batch, x0, steps, tracker, maxcor
        n = x0.shape[0]
        self.points = x0.reshape(n, -1).astype(np.float64)  # each image's latest point
        self.values = np.zeros(n)
        self.grads = np.zeros_like(self.points)
        self.scale = np.zeros(n)  # each image's objective divisor, fixed at its first evaluation
        self.barrier = threading.Barrier(n + 1)  # the n workers and the calling thread
        self.halt = False  # stop now: callback, non-finite loss, interrupt or error; results not handed out
        self.spent = False  # the evaluation budget is spent: this result is handed out, the next call stops
        self.errors: list[BaseException] = []

    def evaluate(self, i: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (image i's total loss, its gradient) at x, evaluated in the next batch; raise _Stop when done."""
        if self.halt or self.spent:
            raise _Stop
        self.points[i] = x
        try:
            self.barrier.wait()  # all points posted: the caller evaluates the batch
            self.barrier.wait()  # results ready
        except threading.BrokenBarrierError:
            raise _Stop from None
        if self.halt:
            raise _Stop
        if not self.scale[i]:  # the same first-step scaling as optimize.run_lbfgs, per image
            self.scale[i] = first_step_scale(self.grads[i])
        return float(self.values[i]) / self.scale[i], self.grads[i] / self.scale[i]

    def worker(self, i: int) -> None:
        """Minimise image i like optimize.run_lbfgs does (restarting from its best point if scipy stops early)."""
        try:
            while not (self.halt or self.spent):
                done = self.tracker.evals
                left = self.steps - done
                best = self.tracker.best_image[i]
                start = best if best is not None else self.x0[i]
                scipy.optimize.minimize(lambda x: self.evaluate(i, x), start.astype(np.float64).ravel(), jac=True,
                                        method="L-BFGS-B", bounds=scipy.optimize.Bounds(0.0, 1.0),
                                        options={"maxiter": left, "maxfun": left, "maxcor": self.maxcor,
                                                 "ftol": 0.0, "gtol": 0.0})
                if self.tracker.evals == done:  # scipy ended without evaluating: keep the batch whole
                    while True:
                        self.evaluate(i, self.points[i].copy())
        except _Stop:
            pass
        except BaseException as e:  # noqa: BLE001 (handed to the caller, which re-raises it)
            self.errors.append(e)
            self.halt = True
            self.barrier.abort()

    def run(self) -> None:
        """Evaluate batches until the budget is spent or something stops the run; re-raise a worker's error."""
        n, shape = self.points.shape[0], self.x0.shape
        threads = [threading.Thread(target=self.worker, args=(i,), name=f"sweep-lbfgs-{i}", daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        try:
            while not (self.halt or self.spent):
                self.barrier.wait()  # every worker has posted its point
                images = self.points.reshape(shape).astype(np.float32)
                terms, grad = self.batch(images)
                self.tracker.record(images, terms)
                self.values[:] = terms["total"]
                self.grads[:] = grad.reshape(n, -1)
                if self.tracker.stop:
                    self.halt = True
                elif self.tracker.evals >= self.steps:
                    self.spent = True
                self.barrier.wait()  # hand out the results
        except threading.BrokenBarrierError:
            pass  # a worker failed; its error is re-raised below
        except BaseException:  # KeyboardInterrupt (or a failed evaluation): release every worker, then re-raise
            self.halt = True
            self.barrier.abort()
            raise
        finally:
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]


def _run_lbfgs(batch: _Batch, x0: np.ndarray, steps: int, tracker: _BatchTracker, maxcor: int = 20) -> None:
    """Minimise every image with its own scipy L-BFGS-B (as `stylize` does); one batched evaluation per step."""

    with threadpool_limits(limits=1, user_api="blas"):  # spinning BLAS threads take TF's cores
        _Lockstep(batch, x0, steps, tracker, maxcor).run()


def _run_adam(batch: _Batch, x0: np.ndarray, steps: int, tracker: _BatchTracker, learning_rate: float) -> None:
    """Minimise each image with Adam (the tutorial's settings; elementwise, so exactly separable)."""
    image = tf.Variable(x0, dtype=tf.float32)
    opt = tf.keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.99, epsilon=0.1)
    for _ in range(steps):
        current = image.numpy()
        terms, grad = batch(current)
        tracker.record(current, terms)
        if tracker.stop:
            break
        opt.apply_gradients([(tf.constant(grad, tf.float32), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))


def sweep(content=None, style=None, config: StyleConfig | None = None, settings: Sequence[dict] = (), *,
          callback: SweepCallback | None = None, progress: bool = True,
          weights: str | os.PathLike | None = None, init_images: np.ndarray | Sequence[np.ndarray] | None = None,
          devices: Sequence[str] | None = None, **overrides) -> list[Result]:
    """Return one Result per setting, all optimised together as one batch from the same targets.

    settings: dicts of StyleConfig fields that vary per image: alpha, beta, tv and/or
    style_layer_weights (one weight per layer of config.style_layers; zeros switch layers off).
    Everything else (size, steps, optimizer, layers, init, seed) comes from `config` and
    `overrides`. init_images: one start image (shared) or one per setting; default the config's init.
    """
    config = (config or StyleConfig()).replace(**overrides) if overrides else (config or StyleConfig())
    settings = [dict(s) for s in settings] or [{}]
    allowed = {"alpha", "beta", "tv", "style_layer_weights"}
    for s in settings:
        if set(s) - allowed:
            raise ValueError(f"a sweep setting may only change {sorted(allowed)}, got {sorted(set(s) - allowed)}")
    configs = [config.replace(**s) for s in settings]
    t0 = time.perf_counter()
    inputs = prepare_inputs(config, content, style)  # the same loading, style scale, blend and colours as stylize
    content_img, style_imgs = inputs.content, inputs.styles
    if config.seed is not None:
        tf.random.set_seed(config.seed)
    batch = _Batch(config, configs, content_img, style_imgs, inputs.blend, weights, replica_devices(devices))
    n = len(configs)
    if init_images is None:
        x0 = np.stack([initial_image(config, content_img, style_imgs[0])] * n)
    else:
        inits = [init_images] * n if np.ndim(init_images) == 3 else list(init_images)
        x0 = np.stack([np.asarray(i, np.float32) if np.shape(i) == content_img.shape
                       else resize(np.clip(np.asarray(i, np.float32), 0, 1), content_img.shape[:2]) for i in inits])
    x0 = x0.astype(np.float32)
    t1 = time.perf_counter()
    h, w = content_img.shape[:2]
    tracker = _BatchTracker(n, config.steps, callback, progress, f"sweep {n}x {config.optimizer} {w}x{h}")
    interrupted = False
    try:
        if config.optimizer in ("lbfgs", "lbfgs-scipy"):
            _run_lbfgs(batch, x0, config.steps, tracker)
        else:
            _run_adam(batch, x0, config.steps, tracker, config.learning_rate)
    except KeyboardInterrupt:
        interrupted, tracker.message = True, "interrupted; kept the best images so far"
    finally:
        tracker.bar.close()
    t2 = time.perf_counter()
    timings = {"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0, "batch": n,
               "devices": len(batch.devices)}
    results = []
    for i, cfg in enumerate(configs):
        best = tracker.best_image[i] if tracker.best_image[i] is not None else x0[i]
        results.append(Result(image=inputs.finish(np.clip(best, 0.0, 1.0)), history=tracker.history[i],
                              best_loss=float(tracker.best_loss[i]) if math.isfinite(tracker.best_loss[i]) else math.inf,
                              config=cfg, timings=dict(timings), interrupted=interrupted, message=tracker.message))
    return results
