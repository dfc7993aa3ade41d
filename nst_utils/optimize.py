"""The engine: `stylize` optimises an image's pixels with L-BFGS (scipy) or Adam (Keras) over one Objective."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import tensorflow as tf
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import checkpoint as ckpt_mod
from . import data, progress as progress_mod
from .colour import gray
from .config import StyleConfig
from .controls import prepare_inputs
from .errors import NSTError
from .images import load_image, resize, save_image
from .losses import Objective
from .model import FeatureExtractor, resolve_precision

ImageLike = "str | os.PathLike | np.ndarray"
# callback(step, image HxWx3 in [0,1], terms as floats) -> True to stop early
Callback = Callable[[int, np.ndarray, dict], "bool | None"]
TERMS = ("content", "style", "tv", "total")


@dataclass
class Result:
    """What a run produced: the best image, each loss term per step, and how it went."""

    image: np.ndarray
    history: dict[str, list[float]]
    best_loss: float
    config: StyleConfig
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    message: str = ""
    checkpoint: str | None = None  # where an interrupted run wrote its checkpoint

    @property
    def steps(self) -> int:
        """Return the number of loss evaluations recorded."""
        return len(self.history["total"])


def as_image(source, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Return an HxWx3 float32 image in [0, 1] from a path, registry name or array, resized if asked."""
    if isinstance(source, np.ndarray | tf.Tensor):
        img = np.asarray(source, dtype=np.float32)
        if img.ndim == 4 and img.shape[0] == 1:
            img = img[0]
        if img.ndim != 3 or img.shape[-1] != 3:
            raise NSTError(f"an image array must be HxWx3, got shape {img.shape}")
        if not np.isfinite(img).all():
            raise NSTError("an image array contains NaN or infinite values; pass RGB floats in [0, 1]")
        img = np.clip(img, 0.0, 1.0)
    else:
        img = load_image(data.image_path(source), max_size=size if isinstance(size, int) else None)
    if size is not None:
        img = resize(img, size)
    if min(img.shape[:2]) < 16:
        name = "" if isinstance(source, np.ndarray | tf.Tensor) else f"{source} "  # tiny images are upscaled; thin ones refused
        raise NSTError(f"image {name}is {img.shape[1]}x{img.shape[0]} px after resizing: too thin for VGG19, which needs "
                       f"at least 16 px per side; crop it to a less elongated shape or use a larger --size")
    return img


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def get_extractor(layers: Sequence[str], pooling: str = "max", weights: str | os.PathLike | None = None,
                  precision: str = "float32", normalize: bool = False) -> FeatureExtractor:
    """Return a cached FeatureExtractor for these layers (one VGG19 build per layer set, pooling, precision, normalisation)."""
    precision = resolve_precision(precision)
    for (_, _, source, _, _), ext in _EXTRACTORS.items():  # never reuse a model built from other weights
        if source == str(weights) and ext.covers(layers, pooling, precision, normalize) and \
                max(map(_depth, ext.layers)) == max(map(_depth, layers)):
            return ext
    key = (tuple(sorted(set(layers))), pooling, str(weights), precision, bool(normalize))
    _EXTRACTORS[key] = FeatureExtractor(layers, weights, pooling, precision, normalize)
    return _EXTRACTORS[key]


def _depth(layer: str) -> int:
    """Return a layer's position in VGG19."""
    from .model import LAYERS

    return LAYERS.index(layer)


def build_objective(config: StyleConfig, content: np.ndarray, styles: Sequence[np.ndarray],
                    blend: Sequence[float] | None = None, weights: str | os.PathLike | None = None) -> Objective:
    """Return an Objective for `config` with its content and style targets computed once."""
    extractor = get_extractor(config.content_layers + config.style_layers, config.pooling, weights, config.precision,
                              config.normalize_vgg)
    obj = Objective(extractor, config.content_layers, config.style_layers, alpha=config.alpha, beta=config.beta,
                    tv=config.tv, style_layer_weights=config.layer_weights())
    obj.set_content(content[None])
    obj.set_style([s[None] for s in styles], blend)
    return obj


def initial_image(config: StyleConfig, content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Return the starting image: the content, uniform noise (seeded), or the style resized to the content."""
    if config.init == "content":
        return content.copy()
    if config.init == "style":
        return resize(style, content.shape[:2])
    rng = np.random.default_rng(config.seed)
    return rng.uniform(0.0, 1.0, content.shape).astype(np.float32)


class _Tracker:
    """Records each evaluation's terms, keeps the best image, drives the progress bar and callback."""

    def __init__(self, steps: int, callback: Callback | None, progress: bool, desc: str):
        self.history: dict[str, list[float]] = {k: [] for k in TERMS}
        self.best_loss = math.inf
        self.best_image: np.ndarray | None = None
        self.last_good: np.ndarray | None = None
        self.callback = callback
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
        self.stop = False
        self.message = ""
        self.state: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None = None  # (current image, optimiser arrays)

    def record(self, image: np.ndarray, terms: dict[str, tf.Tensor]) -> bool:
        """Record one evaluation; return False (and set a message) if the loss is not finite."""
        vals = {k: float(tf.reduce_sum(terms[k])) for k in TERMS}
        if not all(map(math.isfinite, vals.values())):
            self.message = f"loss became {vals['total']} at step {len(self.history['total']) + 1}; kept the last good image"
            self.stop = True
            return False
        for k in TERMS:
            self.history[k].append(vals[k])
        self.last_good = image
        if vals["total"] < self.best_loss:
            self.best_loss, self.best_image = vals["total"], image
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{vals['total']:.4g}", refresh=False)
        if self.callback is not None and self.callback(len(self.history["total"]), image, vals):
            self.stop = True
            self.message = "stopped by callback"
        return True

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


class _Stop(Exception):
    """Raised inside scipy's loop to end the L-BFGS run early."""


FIRST_STEP = 0.05  # L-BFGS-B's first trial step moves no pixel by more than this (see run_lbfgs)


def first_step_scale(gradient: np.ndarray, first_step: float = FIRST_STEP) -> float:
    """Return the divisor of the objective that makes L-BFGS-B's first (unit, raw-gradient) step move <= first_step."""
    return max(float(np.abs(gradient).max()) / first_step, 1e-30) if first_step > 0 else 1.0


def run_lbfgs(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, maxcor: int = 20,
              first_step: float = FIRST_STEP) -> None:
    """Minimise with scipy's L-BFGS-B under [0, 1] pixel bounds for at most `steps` loss evaluations.

    With bounds on every pixel, L-BFGS-B's first trial step is the raw gradient, which for this loss pushes most
    pixels to 0 or 1 and wastes the run's first evaluations undoing it. The objective handed to scipy is divided
    by a constant chosen from the first gradient so that this first step moves no pixel by more than `first_step`;
    L-BFGS is otherwise invariant to that scale (its Hessian estimate rescales after one step).
    """
    shape = (1,) + x0.shape
    scale: list[float] = []

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        if tracker.stop:
            raise _Stop
        img = tf.constant(x.reshape(shape), tf.float32)
        terms, grad = objective.value_and_grad(img)
        if not tracker.record(x.reshape(x0.shape).astype(np.float32), terms) or tracker.stop:
            raise _Stop
        if len(tracker.history["total"]) >= steps:
            tracker.stop = True  # scipy may evaluate once more inside a line search; we stop here instead
        g = grad.numpy().astype(np.float64).ravel()
        if not scale:
            scale.append(first_step_scale(g, first_step))
        return float(tf.reduce_sum(terms["total"])) / scale[0], g / scale[0]


    try:
        with threadpool_limits(limits=1, user_api="blas"):  # spinning BLAS threads take TF's cores
            while not tracker.stop:
                left = steps - len(tracker.history["total"])
                start = tracker.best_image if tracker.best_image is not None else x0
                scipy.optimize.minimize(fun, start.astype(np.float64).ravel(), jac=True, method="L-BFGS-B",
                                        bounds=scipy.optimize.Bounds(0.0, 1.0),
                                        options={"maxiter": left, "maxfun": left, "maxcor": maxcor, "ftol": 0.0, "gtol": 0.0})
                if len(tracker.history["total"]) >= steps or not left:
                    break
    except _Stop:
        pass


def run_adam(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, learning_rate: float = 0.02,
             state: Sequence[np.ndarray] | None = None) -> None:
    """Minimise with Adam (the TensorFlow tutorial's settings), clipping pixels to [0, 1] after each step.

    `steps` counts the tracker's history too (a resumed run does the rest); `state` restores a checkpoint's moments.
    """
    image = tf.Variable(x0[None], dtype=tf.float32)
    opt = tf.keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.99, epsilon=0.1)
    opt.build([image])
    kept = [v for v in opt.variables if "learning_rate" not in v.name]  # iteration, moments, velocities
    for var, value in zip(kept, state or []):
        var.assign(value)
    tracker.state = lambda: (image.numpy()[0], [v.numpy() for v in kept])

    @tf.function
    def step() -> dict[str, tf.Tensor]:
        terms, grad = objective.value_and_grad(tf.convert_to_tensor(image))
        opt.apply_gradients([(grad, image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return terms

    current = x0
    for _ in range(steps - len(tracker.history["total"])):
        terms = step()  # terms describe `current`, the image before this update
        if not tracker.record(current, terms) or tracker.stop:
            break
        current = image.numpy()[0]


def stylize(content=None, style=None, config: StyleConfig | None = None, *, callback: Callback | None = None,
            progress: bool = True, weights: str | os.PathLike | None = None, init_image: np.ndarray | None = None,
            style_mask=None, output: str | os.PathLike | None = None, save_every: int | None = None,
            plot: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
            resume: str | os.PathLike | None = None, **overrides) -> Result:
    """Return a Result: `content` restyled like `style` (paths, registry names or arrays, or a list of styles).

    Controls beyond the config: `style_mask` (style 1 where white, style 2 where black), `output` (PNG written at
    the end; intermediates and the interrupt checkpoint go beside it), `save_every` N steps, `plot` (loss curves
    PNG), `checkpoint` (where Ctrl-C writes the run's state), `resume` (a checkpoint to continue).
    """
    ckpt = ckpt_mod.load(resume) if resume is not None else None
    config = _resumed_config(ckpt, content, style, style_mask, overrides) if ckpt else \
        ((config or StyleConfig()).replace(**overrides) if overrides else (config or StyleConfig()))
    if save_every is not None and output is None:
        raise NSTError("save_every needs an output path: intermediate images are written next to it")
    t0 = time.perf_counter()
    from .memory import check_source  # refuse a run that cannot fit in memory, before loading or building anything

    check_source(ckpt.inputs.content if ckpt else content, config)
    inputs = ckpt.inputs if ckpt else prepare_inputs(config, content, style, style_mask)
    content_img, style_imgs = inputs.content, inputs.styles
    if config.seed is not None:
        tf.random.set_seed(config.seed)
    if inputs.mask is not None:
        from .masks import build_guided_objective

        objective = build_guided_objective(config, content_img, style_imgs, inputs.mask, weights)
    else:
        objective = build_objective(config, content_img, style_imgs, inputs.blend, weights)
    if ckpt:
        x0 = ckpt.image
    elif init_image is not None:
        x0 = gray(init_image) if inputs.colour == "luminance" else init_image
    else:
        x0 = initial_image(config, content_img, style_imgs[0])
    if x0.shape != content_img.shape:
        x0 = resize(np.clip(x0, 0, 1), content_img.shape[:2])
    if config.scales and not ckpt and inputs.mask is None:  # coarse-to-fine start (config.scales; off by default)
        from .multiscale import coarse_to_fine

        x0 = coarse_to_fine(config, content_img, style_imgs, x0, inputs.blend, weights)
    t1 = time.perf_counter()
    tracker = _Tracker(config.steps, callback, progress, f"{config.optimizer} {content_img.shape[1]}x{content_img.shape[0]}")
    if ckpt:
        ckpt_mod.restore(tracker, ckpt)
    saver = progress_mod.SaveEvery(save_every, output) if save_every is not None else None
    tracker.callback = progress_mod.chain(callback, saver, finish=inputs.finish if inputs.colour == "luminance" else None)
    interrupted, written = False, None
    try:
        if len(tracker.history["total"]) < config.steps:
            if config.optimizer in ("lbfgs", "lbfgs-scipy"):
                run_lbfgs(objective, x0, config.steps, tracker)
            else:
                run_adam(objective, x0, config.steps, tracker, config.learning_rate,
                         state=ckpt.optimizer_state if ckpt else None)
    except KeyboardInterrupt:
        interrupted, tracker.message = True, "interrupted; kept the best image so far"
        where = checkpoint if checkpoint is not None else (ckpt_mod.checkpoint_path(output) if output else None)
        if where is not None:
            written = str(ckpt_mod.save(ckpt_mod.snapshot(tracker, config, inputs, x0), where))
            tracker.message += f" and wrote checkpoint {written} (continue with resume / --resume)"
    finally:
        tracker.close()
    best = tracker.best_image if tracker.best_image is not None else x0
    image = inputs.finish(np.clip(best, 0.0, 1.0))
    if output is not None:
        save_image(image, output)
    if plot is not None:
        progress_mod.save_loss_plot(tracker.history, plot, title=f"Loss terms per step ({config.optimizer})")
    t2 = time.perf_counter()
    return Result(image=image, history=tracker.history, best_loss=tracker.best_loss, config=config,
                  timings={"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0},
                  interrupted=interrupted, message=tracker.message, checkpoint=written)


RESUME_FIXED = ("size", "style_scale", "preserve_colors", "style_blend")  # decided by the checkpoint's stored inputs


def _resumed_config(ckpt: ckpt_mod.Checkpoint, content, style, style_mask, overrides: dict) -> StyleConfig:
    """Return the checkpoint's config with `overrides` applied, refusing what a resumed run cannot change."""
    if content is not None or style is not None or style_mask is not None:
        raise NSTError("a resumed run continues the checkpoint's own images; do not pass content, style or a mask")
    fixed = [k for k in RESUME_FIXED if k in overrides and overrides[k] != getattr(ckpt.config, k)]
    if fixed:
        raise NSTError(f"cannot change {', '.join(fixed)} when resuming; the checkpoint's images were prepared with them")
    return ckpt.config.replace(**overrides) if overrides else ckpt.config
