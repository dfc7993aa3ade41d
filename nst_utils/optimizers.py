"""The optimisers: the projected L-BFGS in TensorFlow (driven in compiled chunks), scipy's L-BFGS-B, and Adam.

Each run owns its optimiser: `run_lbfgs` makes a ProjectedLBFGS unless the caller passes the one it keeps (one
trace per shape and batch), and `Adam` holds the tutorial's optimiser with its image and moments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.optimize
import tensorflow as tf
from threadpoolctl import threadpool_limits

from .lbfgs import FIRST_STEP, ProjectedLBFGS, ValueAndGrad, objective_scale
from .objective import Objective
from .tracking import TERMS, Stop, Tracker

CALL_SECONDS = 0.25  # each compiled L-BFGS call runs about this long: progress and callbacks update 4 times a second
MAX_CALL_EVALS = 1000  # and makes at most this many evaluations


def run_scipy_lbfgs(
    objective: Objective, x0: np.ndarray, steps: int, tracker: Tracker, maxcor: int = 20, first_step: float = FIRST_STEP
) -> None:
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
            raise Stop
        img = tf.constant(x.reshape(shape), tf.float32)
        terms, grad = objective.value_and_grad(img)
        if not tracker.record(x.reshape(x0.shape).astype(np.float32), terms) or tracker.stop:
            raise Stop
        if len(tracker.history["total"]) >= steps:
            tracker.stop = True  # scipy may evaluate once more inside a line search; we stop here instead
        g = grad.numpy().astype(np.float64).ravel()
        if not scale:
            scale.append(float(objective_scale(g[None], first_step)[0]))
        return float(tf.reduce_sum(terms["total"])) / scale[0], g / scale[0]

    try:
        with threadpool_limits(limits=1, user_api="blas"):  # spinning BLAS threads take TF's cores
            while not tracker.stop:
                left = steps - len(tracker.history["total"])
                start = tracker.best_image if tracker.best_image is not None else x0
                scipy.optimize.minimize(
                    fun,
                    start.astype(np.float64).ravel(),
                    jac=True,
                    method="L-BFGS-B",
                    bounds=scipy.optimize.Bounds(0.0, 1.0),
                    options={"maxiter": left, "maxfun": left, "maxcor": maxcor, "ftol": 0.0, "gtol": 0.0},
                )
                if len(tracker.history["total"]) >= steps or not left:
                    break
    except Stop:
        pass


def new_lbfgs(value_and_grad: ValueAndGrad, shape: tuple[int, ...], memory: int = 20) -> ProjectedLBFGS:
    """Return a ProjectedLBFGS for a batch of this shape reporting every loss term (TERMS)."""
    return ProjectedLBFGS(value_and_grad, shape, TERMS, memory)


def next_call_evals(n: int, seconds: float, calls: int, seconds_per_call: float | None = None) -> int:
    """Return how many evaluations the next compiled call should make: about `seconds_per_call` worth, at least 1.

    `n` evaluations took `seconds` in the latest of `calls` calls. The first call traces and the second measures, so
    both make one evaluation; then k follows the latest call's rate.
    """
    target = CALL_SECONDS if seconds_per_call is None else seconds_per_call
    if calls < 2 or target <= 0:
        return 1
    return int(min(MAX_CALL_EVALS, max(1, round(target * n / max(seconds, 1e-9)))))


def drive_lbfgs(
    opt: ProjectedLBFGS, steps: int, tracker, seconds_per_call: float | None = None, align: int | None = None
) -> int:
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


def run_lbfgs(
    objective: Objective,
    x0: np.ndarray,
    steps: int,
    tracker: Tracker,
    memory: int = 20,
    state: Sequence[np.ndarray] | None = None,
    seconds_per_call: float | None = None,
    align: int | None = None,
    lbfgs: ProjectedLBFGS | None = None,
) -> int:
    """Minimise with the projected L-BFGS in TensorFlow (lbfgs.py) under [0, 1] pixel bounds; return compiled calls.

    `steps` counts the tracker's history too (a resumed run does the rest); `state` restores a checkpoint's L-BFGS
    state (memory, line search, best image), so a resumed run continues the same run. `lbfgs`: the caller's own
    ProjectedLBFGS for (1,) + x0.shape (kept across runs, it is traced once), else a new one for this run. The best
    image stays on the device until the run ends (or is interrupted), then lands in `tracker.best_image`.
    """
    opt = lbfgs if lbfgs is not None else new_lbfgs(objective.value_and_grad, (1,) + x0.shape, memory)
    if not (state and opt.restore(state, (1,) + x0.shape)):  # a kept optimiser may hold other images, or none
        opt.start(x0[None])
    try:
        return drive_lbfgs(opt, steps, tracker, seconds_per_call, align)
    finally:
        tracker.keep_best(opt.best(), np.isfinite(opt.best_f.numpy()))


class Adam:
    """The TensorFlow tutorial's Adam over a batch of images, pixels clipped to [0, 1] after each step.

    Adam is elementwise, so each image of a batch runs as it would alone. `state` restores a checkpoint's moments.
    """

    def __init__(
        self,
        value_and_grad: Callable,
        x0: np.ndarray,
        learning_rate: float = 0.02,
        state: Sequence[np.ndarray] | None = None,
    ):
        self.value_and_grad = value_and_grad
        self.image = tf.Variable(x0, dtype=tf.float32)
        self.opt = tf.keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.99, epsilon=0.1)
        self.opt.build([self.image])
        self.kept = [v for v in self.opt.variables if "learning_rate" not in v.name]  # iteration, moments, velocities
        for var, value in zip(self.kept, state or []):
            var.assign(value)
        self.step = tf.function(self._step, autograph=False)

    def _step(self) -> dict[str, tf.Tensor]:
        """Return the loss terms at the current images, after moving them one Adam step (clipped to [0, 1])."""
        terms, grad = self.value_and_grad(tf.convert_to_tensor(self.image))
        self.opt.apply_gradients([(grad, self.image)])
        self.image.assign(tf.clip_by_value(self.image, 0.0, 1.0))
        return terms

    def state(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return (the first image now, the optimiser's arrays) for a checkpoint."""
        return self.image.numpy()[0], [v.numpy() for v in self.kept]


def run_adam(
    value_and_grad: Callable,
    x0: np.ndarray,
    steps: int,
    tracker: Tracker,
    learning_rate: float = 0.02,
    state: Sequence[np.ndarray] | None = None,
    adam: Adam | None = None,
) -> None:
    """Minimise a batch x0 (B, H, W, 3) with Adam (the tutorial's settings), clipping pixels to [0, 1] after each step.

    `steps` counts the tracker's history too (a resumed run does the rest); `state` restores a checkpoint's moments;
    `adam`: the caller's own Adam started at x0, else a new one for this run.
    """
    adam = adam if adam is not None else Adam(value_and_grad, x0, learning_rate, state)
    current = x0
    for _ in range(steps - tracker.count):
        terms = adam.step()  # terms describe `current`, the images before this update
        tracker.record_batch(current, {k: np.asarray(v, np.float64).reshape(-1) for k, v in terms.items()})
        if tracker.stop:
            break
        current = adam.image.numpy()
