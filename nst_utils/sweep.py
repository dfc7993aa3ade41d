"""Batched sweeps: optimise one image per weight setting in a single run, sharing the targets.

`sweep` stylizes a *batch*: image i gets its own alpha, beta, TV weight and/or style-layer
weight vector (Objective holds them as per-image vectors), while the content features and
style Grams are computed once and broadcast over the batch. Each image's loss depends only
on that image, so the summed objective is separable:

- Adam is elementwise, so a batched Adam run equals the single runs up to float rounding.
- L-BFGS on the *joint* vector (all pixels of all images) is not fair: one line search and one
  curvature memory are shared, so the worst-conditioned image sets the step for all, and images
  whose loss scale differs by orders of magnitude (block1-only vs all-layer style, beta/alpha a
  decade apart) barely move. So the batched projected L-BFGS (`lbfgs.ProjectedLBFGS`, the one
  `stylize` uses) gives each image its own memory, step size, line search and acceptance; only
  the evaluations are batched, and its iterations run inside one `tf.function` call of k
  evaluations, so image i's path depends on image i alone: a batched sweep equals `stylize` per
  setting up to float rounding in batched convolutions (tested). The budget (`steps` batched
  evaluations), a callback's stop, a non-finite loss and Ctrl-C end the run for every image.
  scipy's L-BFGS-B (`optimizer="lbfgs-scipy"`) is refused here: call `stylize` per setting.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from .config import NSTError, StyleConfig, as_config
from .images import as_image
from .inputs import check_arguments, prepare_inputs
from .objective import Objective, build_objective, initial_image
from .optimizers import drive_lbfgs, new_lbfgs, run_adam
from .run import Result
from .tracking import STALLED, TERMS, BatchTracker, kept_start

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


class _CellTracker(BatchTracker):
    """A BatchTracker that also notes which images' loss went non-finite and at which step (a sweep names them)."""

    def __init__(self, n: int, steps: int, callback: Callable | None, progress: bool, desc: str):
        super().__init__(n, steps, callback, progress, desc)
        self.nonfinite = np.zeros(n, bool)
        self.nonfinite_step = 0

    def _append(self, terms: dict[str, np.ndarray]) -> bool:
        """Append one batched evaluation as BatchTracker does; return False after noting the non-finite images."""
        if super()._append(terms):
            return True
        self.nonfinite = ~np.isfinite(np.asarray(terms["total"], np.float64).reshape(-1))
        self.nonfinite_step = self.evals + 1
        return False

    def cell_message(self, i: int, steps: int, unoptimised: bool) -> str:
        """Return how image i's run ended when not by finishing its `steps` ("" if it did and changed its start)."""
        if self.nonfinite.any():
            why = (
                f"loss became non-finite at step {self.nonfinite_step}"
                if self.nonfinite[i]
                else f"stopped at step {self.evals} of {steps}: another cell's loss became non-finite"
            )
            message = f"{why}; kept its best image so far"
        else:
            message = self.message
        if unoptimised:
            message = (message.split(";")[0] + "; " if message else "") + "its image is the unoptimised start"
        elif kept_start(self.history[i]["total"], self.best_loss[i]):  # finite, but nothing better than its start
            message = "; ".join(m for m in (message, STALLED) if m)
        return message


def _start_images(init_images, n: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Return n start images of `shape` from one image (an array or a path, shared) or one per setting (a list, or a
    BxHxWx3 array); each checked and resized as stylize's init_image (as_image)."""
    per_setting = isinstance(init_images, list | tuple) or (
        isinstance(init_images, np.ndarray) and init_images.ndim == 4
    )
    inits = list(init_images) if per_setting else [init_images] * n
    if len(inits) != n:
        raise NSTError(f"{len(inits)} init images for {n} sweep settings; give one (shared) or one per setting")
    return [as_image(i, shape[:2]) for i in inits]


class _Batch:
    """Evaluates the batched objective, split over one Objective per device."""

    def __init__(
        self,
        config: StyleConfig,
        configs: Sequence[StyleConfig],
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        blend,
        weights,
        devices: Sequence[str | None],
    ):
        n = len(configs)
        self.chunks = [c for c in np.array_split(np.arange(n), min(len(devices), n)) if len(c)]
        self.objectives: list[Objective] = []
        for dev, idx in zip(devices, self.chunks):
            obj = build_objective(config, content, styles, blend, weights, device=dev)
            part = [configs[i] for i in idx]
            obj.set_weights(
                alpha=[c.alpha for c in part],
                beta=[c.beta for c in part],
                tv=[c.tv for c in part],
                style_layer_weights=[c.layer_weights() for c in part],
            )
            self.objectives.append(obj)
        self.devices = list(devices)[: len(self.chunks)]

    def value_and_grad(self, images: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return ({term: (B,) values}, gradient of each image's own total) for a BxHxWx3 batch tensor."""
        outs = []
        for dev, obj, idx in zip(self.devices, self.objectives, self.chunks):
            with tf.device(dev) if dev is not None else contextlib.nullcontext():
                part = images if len(self.chunks) == 1 else tf.gather(images, idx)
                outs.append(obj.value_and_grad(part))  # async on GPUs
        if len(outs) == 1:
            return outs[0]
        return {k: tf.concat([tf.reshape(t[k], [-1]) for t, _ in outs], 0) for k in TERMS}, tf.concat(
            [g for _, g in outs], 0
        )

    def tracing_count(self) -> int:
        """Return the summed tracing count of the objectives (one trace per objective and function)."""
        return sum(o.tracing_count() for o in self.objectives)


def _run_lbfgs(batch: _Batch, x0: np.ndarray, steps: int, tracker: BatchTracker, memory: int = 20) -> int:
    """Minimise every image with its own projected L-BFGS (as `stylize` does), batched; return compiled calls made."""
    opt = new_lbfgs(batch.value_and_grad, x0.shape, memory)  # this run's own
    opt.start(x0)
    try:
        return drive_lbfgs(opt, steps, tracker)
    finally:
        tracker.keep_best(opt.best(), np.isfinite(opt.best_f.numpy()))


def sweep(
    content=None,
    style=None,
    config: StyleConfig | None = None,
    settings: Sequence[dict] = (),
    *,
    callback: SweepCallback | None = None,
    progress: bool = True,
    weights: str | os.PathLike | None = None,
    init_images: np.ndarray | Sequence[np.ndarray] | None = None,
    devices: Sequence[str] | None = None,
    during_run: contextlib.AbstractContextManager | None = None,
    **overrides,
) -> list[Result]:
    """Return one Result per setting, all optimised together as one batch from the same targets.

    settings: dicts of StyleConfig fields that vary per image: alpha, beta, tv and/or
    style_layer_weights (one weight per layer of config.style_layers; zeros switch layers off).
    Everything else (size, steps, optimizer, layers, init, seed) comes from `config` and
    `overrides`. init_images: one start image (an array or a path, shared) or a list of one per setting, each
    checked as stylize's init_image; default the config's init. during_run: a context entered around the
    optimiser's loop (the `nst` CLI defers signals inside it). A Result's message says how its cell ended when not
    by finishing (its own non-finite loss, another cell's, a callback, Ctrl-C) and `unoptimised` whether no finite
    evaluation was kept for it (its image is the start image).
    """
    config = as_config(config, overrides)
    check_arguments(content=content, style=style, callback=callback, progress=progress)
    settings = [dict(s) for s in settings] or [{}]
    allowed = {"alpha", "beta", "tv", "style_layer_weights"}
    for s in settings:
        if set(s) - allowed:
            raise ValueError(f"a sweep setting may only change {sorted(allowed)}, got {sorted(set(s) - allowed)}")
    if config.optimizer == "lbfgs-scipy":
        raise NSTError(
            "a sweep runs optimizer 'lbfgs' (batched, TensorFlow) or 'adam'; for scipy's L-BFGS-B "
            "('lbfgs-scipy') call stylize once per setting"
        )
    configs = [_cell_config(config, s, i) for i, s in enumerate(settings)]
    t0 = time.perf_counter()
    inputs = prepare_inputs(config, content, style)  # the same loading, style scale, blend and colours as stylize
    content_img, style_imgs = inputs.content, inputs.styles
    batch = _Batch(config, configs, content_img, style_imgs, inputs.blend, weights, replica_devices(devices))
    n = len(configs)
    if init_images is None:
        x0 = np.stack([initial_image(config, content_img, style_imgs[0])] * n)
    else:
        x0 = np.stack(_start_images(init_images, n, content_img.shape))
    x0 = x0.astype(np.float32)
    t1 = time.perf_counter()
    h, w = content_img.shape[:2]
    tracker = _CellTracker(n, config.steps, callback, progress, f"sweep {n}x {config.optimizer} {w}x{h}")
    interrupted = False
    try:
        with during_run or contextlib.nullcontext():
            if config.optimizer == "lbfgs":
                _run_lbfgs(batch, x0, config.steps, tracker)
            else:
                run_adam(batch.value_and_grad, x0, config.steps, tracker, config.learning_rate)
    except KeyboardInterrupt:
        interrupted, tracker.message = True, "interrupted; kept the best images so far"
    finally:
        tracker.close()
    t2 = time.perf_counter()
    timings = {"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0, "batch": n, "devices": len(batch.devices)}
    results = []
    for i, cfg in enumerate(configs):
        best = tracker.best_image[i] if tracker.best_image[i] is not None else x0[i]
        unoptimised = tracker.best_image[i] is None or not tracker.history[i]["total"]  # no finite evaluation kept
        results.append(
            Result(
                image=inputs.result_image(np.clip(best, 0.0, 1.0)),
                history=tracker.history[i],
                best_loss=float(tracker.best_loss[i]) if math.isfinite(tracker.best_loss[i]) else math.inf,
                config=cfg,
                timings=dict(timings),
                interrupted=interrupted,
                message=tracker.cell_message(i, config.steps, unoptimised),
                unoptimised=unoptimised,
            )
        )
    return results


def _cell_config(config: StyleConfig, setting: dict, i: int) -> StyleConfig:
    """Return the config of sweep setting i, or raise NSTError naming the setting whose values are invalid."""
    try:
        return config.replace(**setting)
    except NSTError as exc:
        raise NSTError(f"sweep setting {i} ({', '.join(f'{k}={v!r}' for k, v in setting.items())}): {exc}") from None
