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
from tqdm.auto import tqdm

from . import data
from .config import StyleConfig
from .errors import NSTError
from .images import load_image, resize
from .losses import Objective
from .model import FeatureExtractor

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
        img = np.clip(img, 0.0, 1.0)
    else:
        img = load_image(data.image_path(source), max_size=size if isinstance(size, int) else None)
    if size is not None:
        img = resize(img, size)
    if min(img.shape[:2]) < 16:
        raise NSTError(f"image of {img.shape[1]}x{img.shape[0]} px is too small: VGG19 needs at least 16 px per side")
    return img


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def get_extractor(layers: Sequence[str], pooling: str = "max", weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """Return a cached FeatureExtractor for these layers (one VGG19 build per layer set and pooling)."""
    for ext in _EXTRACTORS.values():
        if ext.covers(layers, pooling) and max(map(_depth, ext.layers)) == max(map(_depth, layers)):
            return ext
    key = (tuple(sorted(set(layers))), pooling, str(weights))
    _EXTRACTORS[key] = FeatureExtractor(layers, weights, pooling)
    return _EXTRACTORS[key]


def _depth(layer: str) -> int:
    """Return a layer's position in VGG19."""
    from .model import LAYERS

    return LAYERS.index(layer)


def build_objective(config: StyleConfig, content: np.ndarray, styles: Sequence[np.ndarray],
                    blend: Sequence[float] | None = None, weights: str | os.PathLike | None = None) -> Objective:
    """Return an Objective for `config` with its content and style targets computed once."""
    extractor = get_extractor(config.content_layers + config.style_layers, config.pooling, weights)
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


def run_lbfgs(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, maxcor: int = 20) -> None:
    """Minimise with scipy's L-BFGS-B under [0, 1] pixel bounds for at most `steps` loss evaluations."""
    shape = (1,) + x0.shape

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        if tracker.stop:
            raise _Stop
        img = tf.constant(x.reshape(shape), tf.float32)
        terms, grad = objective.value_and_grad(img)
        if not tracker.record(x.reshape(x0.shape).astype(np.float32), terms) or tracker.stop:
            raise _Stop
        if len(tracker.history["total"]) >= steps:
            tracker.stop = True  # scipy may evaluate once more inside a line search; we stop here instead
        return float(tf.reduce_sum(terms["total"])), grad.numpy().astype(np.float64).ravel()

    try:
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


def run_adam(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, learning_rate: float = 0.02) -> None:
    """Minimise with Adam (the TensorFlow tutorial's settings), clipping pixels to [0, 1] after each step."""
    image = tf.Variable(x0[None], dtype=tf.float32)
    opt = tf.keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.99, epsilon=0.1)

    @tf.function
    def step() -> dict[str, tf.Tensor]:
        terms, grad = objective.value_and_grad(tf.convert_to_tensor(image))
        opt.apply_gradients([(grad, image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return terms

    current = x0
    for _ in range(steps):
        terms = step()  # terms describe `current`, the image before this update
        if not tracker.record(current, terms) or tracker.stop:
            break
        current = image.numpy()[0]


def stylize(content=None, style=None, config: StyleConfig | None = None, *, callback: Callback | None = None,
            progress: bool = True, weights: str | os.PathLike | None = None, init_image: np.ndarray | None = None,
            **overrides) -> Result:
    """Return a Result: `content` restyled like `style` (paths, registry names or arrays; defaults if None)."""
    config = (config or StyleConfig()).replace(**overrides) if overrides else (config or StyleConfig())
    t0 = time.perf_counter()
    default_content, default_style = data.default_images()
    content_img = as_image(content if content is not None else default_content, config.size)
    styles = style if isinstance(style, list | tuple) else [style if style is not None else default_style]
    style_imgs = [as_image(s, config.size) for s in styles]
    if config.seed is not None:
        tf.random.set_seed(config.seed)
    objective = build_objective(config, content_img, style_imgs, config.extra.get("style_blend"), weights)
    x0 = init_image if init_image is not None else initial_image(config, content_img, style_imgs[0])
    if x0.shape != content_img.shape:
        x0 = resize(np.clip(x0, 0, 1), content_img.shape[:2])
    t1 = time.perf_counter()
    tracker = _Tracker(config.steps, callback, progress, f"{config.optimizer} {content_img.shape[1]}x{content_img.shape[0]}")
    interrupted = False
    try:
        if config.optimizer == "lbfgs":
            run_lbfgs(objective, x0, config.steps, tracker)
        else:
            run_adam(objective, x0, config.steps, tracker, config.learning_rate)
    except KeyboardInterrupt:
        interrupted, tracker.message = True, "interrupted; kept the best image so far"
    finally:
        tracker.close()
    best = tracker.best_image if tracker.best_image is not None else x0
    t2 = time.perf_counter()
    return Result(image=np.clip(best, 0.0, 1.0), history=tracker.history, best_loss=tracker.best_loss, config=config,
                  timings={"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0},
                  interrupted=interrupted, message=tracker.message)
