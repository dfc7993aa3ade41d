"""The engine: `stylize` optimises an image's pixels with L-BFGS (ours in TensorFlow, or scipy's) or Adam over one Objective."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

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
from .images import WriteError, load_image, resize, save_image
from .lbfgs import FIRST_STEP, ProjectedLBFGS
from .losses import Objective
from .model import FeatureExtractor, resolve_precision

ImageLike = "str | os.PathLike | np.ndarray"
# callback(step, image HxWx3 in [0,1], terms as floats) -> True to stop early
Callback = Callable[[int, np.ndarray, dict], "bool | None"]
TERMS = ("content", "style", "tv", "total")
CALL_SECONDS = 1.0  # each compiled L-BFGS call runs about this long: the progress bar and callbacks update about once a second
MAX_CALL_EVALS = 1000  # and makes at most this many evaluations
TOL_WINDOW = 20  # `tol` compares the best objective now with the best TOL_WINDOW evaluations ago


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
    writes: progress_mod.Writes = field(default_factory=progress_mod.Writes)  # where each output went, what failed

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

    def __init__(self, steps: int, callback: Callback | None, progress: bool, desc: str, tol: float | None = None):
        self.history: dict[str, list[float]] = {k: [] for k in TERMS}
        self.tol = tol
        self.best_loss = math.inf
        self.best_image: np.ndarray | None = None
        self.last_good: np.ndarray | None = None
        self.callback = callback
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
        self.stop = False
        self.message = ""
        self.state: Callable[[], tuple[np.ndarray, list[np.ndarray]]] | None = None  # (current image, optimiser arrays)

    @property
    def count(self) -> int:
        """Return the number of evaluations recorded."""
        return len(self.history["total"])

    def record(self, image: np.ndarray, terms: dict[str, tf.Tensor]) -> bool:
        """Record one evaluation; return False (and set a message) if the loss is not finite."""
        vals = {k: float(tf.reduce_sum(terms[k])) for k in TERMS}
        better = vals["total"] < self.best_loss
        if not self._append(vals):
            return False
        self.last_good = image
        if better:
            self.best_image = image
        self._notify(1, lambda: image, vals)
        return True

    def record_chunk(self, terms: dict[str, np.ndarray], image: Callable[[], np.ndarray]) -> bool:
        """Record n evaluations (terms: one (n,) or (n, 1) array each) and notify once; return False if one is not finite.

        The best image stays with the optimiser; `image()` fetches the latest evaluated one only if a callback wants it.
        """
        rows = [{k: float(np.sum(terms[k][i])) for k in TERMS} for i in range(len(terms["total"]))]
        recorded = 0
        for vals in rows:
            if not self._append(vals):
                break
            recorded += 1
        if recorded:
            self._notify(recorded, image, rows[recorded - 1])
        return recorded == len(rows)

    def _append(self, vals: dict[str, float]) -> bool:
        """Append one evaluation's terms and track the best loss; return False (stop, message) if one is not finite."""
        if not all(map(math.isfinite, vals.values())):
            self.message = f"loss became {vals['total']} at step {self.count + 1}; kept the last good image"
            self.stop = True
            return False
        for k in TERMS:
            self.history[k].append(vals[k])
        self.best_loss = min(self.best_loss, vals["total"])
        return True

    def _notify(self, n: int, image: Callable[[], np.ndarray], vals: dict[str, float]) -> None:
        """Advance the progress bar by n, call the callback with the latest evaluation, and check convergence."""
        self.bar.update(n)
        self.bar.set_postfix(loss=f"{vals['total']:.4g}", refresh=False)
        if self.callback is not None and self.callback(self.count, image(), vals):
            self.stop = True
            self.message = "stopped by callback"
        elif converged(self.history["total"], self.tol):
            self.stop = True
            self.message = f"converged: the objective fell by less than tol={self.tol:g} over {TOL_WINDOW} evaluations"

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


def converged(totals: Sequence[float], tol: float | None, window: int = TOL_WINDOW) -> bool:
    """Return True if the best objective fell by less than `tol` (relative) over the last `window` evaluations."""
    if not tol or len(totals) <= window:
        return False
    before, now = min(totals[:-window]), min(totals)
    return before - now < tol * abs(now)


class _Stop(Exception):
    """Raised inside scipy's loop to end the L-BFGS run early."""


def first_step_scale(gradient: np.ndarray, first_step: float = FIRST_STEP) -> float:
    """Return the divisor of the objective that makes L-BFGS-B's first (unit, raw-gradient) step move <= first_step."""
    return max(float(np.abs(gradient).max()) / first_step, 1e-30) if first_step > 0 else 1.0


def run_scipy_lbfgs(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, maxcor: int = 20,
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


def lbfgs_for(owner, value_and_grad, shape: tuple[int, ...], memory: int = 20) -> ProjectedLBFGS:
    """Return the ProjectedLBFGS kept on `owner` (an Objective or a batch) for this shape: one trace per shape and batch."""
    kept = vars(owner).setdefault("_lbfgs", {})
    if (shape, memory) not in kept:
        kept[(shape, memory)] = ProjectedLBFGS(value_and_grad, shape, TERMS, memory)
    return kept[(shape, memory)]


def next_call_evals(n: int, seconds: float, calls: int, seconds_per_call: float | None = None) -> int:
    """Return how many evaluations the next compiled call should make: about `seconds_per_call` worth, at least 1.

    `n` evaluations took `seconds` in the latest of `calls` calls. The first call traces and the second measures, so
    both make one evaluation; then k follows the latest call's rate.
    """
    target = CALL_SECONDS if seconds_per_call is None else seconds_per_call
    if calls < 2 or target <= 0:
        return 1
    return int(min(MAX_CALL_EVALS, max(1, round(target * n / max(seconds, 1e-9)))))


def drive_lbfgs(opt: ProjectedLBFGS, steps: int, tracker, seconds_per_call: float | None = None,
                align: int | None = None) -> int:
    """Run `opt` until `tracker` holds `steps` evaluations or stops; return the number of compiled calls made.

    Each call runs k evaluations in the graph and hands back only their loss terms; images cross to the host only
    when the tracker's callback asks for the latest one. With `align`, calls also end at each multiple of it (so
    `save_every` sees its steps).
    """
    k, calls = 1, 0
    while not tracker.stop and tracker.count < steps:
        start = time.perf_counter()
        todo = min(k, steps - tracker.count, align - tracker.count % align if align else k)
        terms, n = opt.iterate(tf.constant(todo, tf.int32))
        values = {name: v.numpy() for name, v in terms.items()}
        calls += 1
        k = next_call_evals(int(n), time.perf_counter() - start, calls, seconds_per_call)
        tracker.record_chunk(values, opt.last)
    return calls


def run_lbfgs(objective: Objective, x0: np.ndarray, steps: int, tracker: _Tracker, memory: int = 20,
              state: Sequence[np.ndarray] | None = None, seconds_per_call: float | None = None,
              align: int | None = None) -> int:
    """Minimise with the projected L-BFGS in TensorFlow (lbfgs.py) under [0, 1] pixel bounds; return compiled calls.

    `steps` counts the tracker's history too (a resumed run does the rest); `state` restores a checkpoint's L-BFGS
    state (memory, line search, best image), so a resumed run continues the same run. The best image stays on the
    device until the run ends (or is interrupted), then lands in `tracker.best_image`.
    """
    opt = lbfgs_for(objective, objective.value_and_grad, (1,) + x0.shape, memory)
    if not (state and opt.restore(state)):
        opt.start(x0[None])
    tracker.state = lambda: (opt.best()[0], opt.state())
    try:
        return drive_lbfgs(opt, steps, tracker, seconds_per_call, align)
    finally:
        if np.isfinite(opt.best_f.numpy()[0]):
            tracker.best_image = opt.best()[0]


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
    config = _resumed_config(ckpt, content, style, style_mask, config, overrides) if ckpt else \
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
    tracker = _Tracker(config.steps, callback, progress, f"{config.optimizer} {content_img.shape[1]}x{content_img.shape[0]}",
                       tol=config.tol)
    if ckpt:
        ckpt_mod.restore(tracker, ckpt)
    saver = progress_mod.SaveEvery(save_every, output) if save_every is not None else None
    tracker.callback = progress_mod.chain(callback, saver, finish=inputs.finish if inputs.colour == "luminance" else None)
    interrupted, written, writes = False, None, progress_mod.Writes()
    try:
        if len(tracker.history["total"]) < config.steps:
            if config.optimizer == "lbfgs":
                run_lbfgs(objective, x0, config.steps, tracker, state=ckpt.optimizer_state if ckpt else None,
                          align=save_every)
            elif config.optimizer == "lbfgs-scipy":
                run_scipy_lbfgs(objective, x0, config.steps, tracker)
            else:
                run_adam(objective, x0, config.steps, tracker, config.learning_rate,
                         state=ckpt.optimizer_state if ckpt else None)
    except (KeyboardInterrupt, WriteError) as exc:  # Ctrl-C, or a --save-every image could not be written: keep the work
        interrupted = isinstance(exc, KeyboardInterrupt)
        tracker.message = "interrupted; kept the best image so far"
        if not interrupted:
            tracker.message = f"stopped after step {len(tracker.history['total'])}"
            writes.failed.append(exc)
        where = checkpoint if checkpoint is not None else (ckpt_mod.checkpoint_path(output) if output else None)
        if where is not None:
            kept = writes(progress_mod.RESUME_FROM, ckpt_mod.save, ckpt_mod.snapshot(tracker, config, inputs, x0), where)
            written = str(kept) if kept else None
    finally:
        tracker.close()
    best = tracker.best_image if tracker.best_image is not None else x0
    image = inputs.finish(np.clip(best, 0.0, 1.0))
    if output is not None:
        writes("the result", save_image, image, output)
    if plot is not None:
        writes("the plot", progress_mod.save_loss_plot, tracker.history, plot, f"Loss terms per step ({config.optimizer})")
    writes.note = tracker.message
    t2 = time.perf_counter()
    return Result(image=image, history=tracker.history, best_loss=tracker.best_loss, config=config,
                  timings={"setup_s": t1 - t0, "optimize_s": t2 - t1, "total_s": t2 - t0},
                  interrupted=interrupted, message=writes.message(), checkpoint=written, writes=writes)


RESUME_FREE = ("steps", "learning_rate", "precision", "tol")  # how long and how a resumed run computes may change
RESUME_FIXED = tuple(f.name for f in fields(StyleConfig) if f.compare and f.name not in RESUME_FREE)  # the checkpoint's


def _resumed_config(ckpt: ckpt_mod.Checkpoint, content, style, style_mask, config: StyleConfig | None,
                    overrides: dict) -> StyleConfig:
    """Return the checkpoint's config with `overrides` applied, refusing any that would change what the run optimises."""
    if content is not None or style is not None or style_mask is not None or config is not None:
        raise NSTError("a resumed run continues the checkpoint's own images and config; do not pass content, style, a mask "
                       "or a config (give what may change, such as steps=, as keywords)")
    asked = ckpt.config.replace(**overrides)
    fixed = [f"{k} ({getattr(ckpt.config, k)!r} in the checkpoint, {getattr(asked, k)!r} asked)"
             for k in RESUME_FIXED if k in overrides and getattr(asked, k) != getattr(ckpt.config, k)]
    if fixed:
        raise NSTError(f"cannot change {', '.join(fixed)} when resuming: the run goes on with the checkpoint's settings; "
                       f"leave {'it' if len(fixed) == 1 else 'them'} out or start a new run (a resumed run may change "
                       f"only {', '.join(RESUME_FREE)} and where its outputs go)")
    return asked
