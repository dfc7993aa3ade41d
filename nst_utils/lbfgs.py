"""A box-constrained (projected) L-BFGS over a batch of images, written in TensorFlow ops.

Each image of the batch has its own memory of `memory` (s, y) pairs, its own step size and its own acceptance; only
the value-and-gradient evaluation is batched. One call of `ProjectedLBFGS.iterate(k)` runs up to k evaluations inside
one `tf.function` (a `tf.while_loop`), so on a GPU only a few scalars per call cross to the host. All state lives in
`tf.Variable`s of free shape: a new start, a new image size or batch, a restored checkpoint or a new k never
retraces (one trace per optimiser).

Per evaluation and image: the trial point x_t = clip(x + t d, lower, upper) is evaluated; the first evaluation of a
run fixes the image's objective scale (max |gradient| / first_step, so the first step moves no pixel by more than
`first_step`); afterwards the trial is accepted on the projected Armijo condition f(x_t) <= f(x) + c g.(x_t - x),
else t is halved. On acceptance the pair (x_t - x, g_t - g) is stored if s.y > eps (curvature check), and the next
direction is the L-BFGS (two-loop recursion) direction, in its compact matrix form, on the free variables (a variable
at a bound whose gradient points outward is held); a non-descent direction or too many backtracks clear the memory
and restart with steepest descent, whose step again moves no pixel by more than `first_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

# value_and_grad(x (batch, ...)) -> ({term: (batch,) tensor, at least "total"}, d sum(total) / dx): image i's total
# must depend on image i alone (a separable batch), as the Objective's does.
ValueAndGrad = Callable[[tf.Tensor], tuple[dict[str, tf.Tensor], tf.Tensor]]

FIRST_STEP = 0.05  # the first (and every steepest-descent) step moves no pixel by more than this
ARMIJO = 1e-4  # sufficient-decrease constant of the line search
CURVATURE_EPS = 1e-10  # a pair is stored only if s.y exceeds this (on the scaled objective)
MAX_BACKTRACKS = 20  # halvings of one step before the memory is cleared and steepest descent restarts
SLOTTED = ("s_hist", "y_hist")  # state held as one (b, n) variable per memory slot (ProjectedLBFGS.__init__ says why)


def objective_scale(gradient, first_step: float = FIRST_STEP) -> tf.Tensor:
    """Return each image's objective divisor, max |gradient| / first_step over the rows of a (B, n) gradient (so a
    unit step moves no pixel by more than first_step)."""
    if first_step <= 0:
        return tf.ones(tf.shape(gradient)[:1], tf.float32)
    return tf.maximum(tf.cast(tf.reduce_max(tf.abs(gradient), axis=1), tf.float32) / first_step, 1e-30)


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Return the per-image dot products of two (batch, n) tensors, shape (batch,)."""
    return tf.einsum("bn,bn->b", a, b)


class ProjectedLBFGS:
    """Minimises a separable batched objective over images in [lower, upper]; state in variables, loop in a graph."""

    STATE = (
        "x",
        "f",
        "g",
        "d",
        "t",
        "trial",
        "evaluated",
        "s_hist",
        "y_hist",
        "sy",
        "yy",
        "head",
        "count",
        "backtracks",
        "scale",
        "fresh",
        "best_x",
        "best_f",
    )

    def __init__(
        self,
        value_and_grad: ValueAndGrad,
        shape: Sequence[int],
        terms: Sequence[str] = ("total",),
        memory: int = 20,
        first_step: float = FIRST_STEP,
        lower: float = 0.0,
        upper: float = 1.0,
    ):
        self.fn, self.terms = value_and_grad, tuple(terms)
        self.memory, self.first_step, self.lower, self.upper = (
            int(memory),
            float(first_step),
            float(lower),
            float(upper),
        )
        rank = len(shape)

        def var(dims: int, dtype=tf.float32) -> tf.Variable:  # shape-free: a new size or batch reuses the trace
            return tf.Variable(tf.zeros([0] * dims, dtype), trainable=False, shape=tf.TensorShape([None] * dims))

        self.x, self.g, self.d, self.trial, self.evaluated, self.best_x = (var(2) for _ in range(6))  # (b, n)
        self.f, self.t, self.scale, self.best_f = (var(1) for _ in range(4))  # (b,)
        # The (s, y) memory: one (b, n) variable per slot. Writing a slot replaces that variable's buffer; an in-place
        # update of one (b, m, n) variable (scatter, sliced assign) would make TensorFlow copy all of it on every read
        # after, twice the history in memory (measured: 7.0 GiB instead of 3.4 for 20 pairs at 2048x2048 px).
        self.s_slots, self.y_slots = [var(2) for _ in range(self.memory)], [var(2) for _ in range(self.memory)]
        self.sy, self.yy = var(3), var(3)  # (b, m, m): s_i.y_j and y_i.y_j by slot, updated as pairs arrive
        self.head, self.count, self.backtracks = (var(1, tf.int32) for _ in range(3))
        self.fresh = var(1, tf.bool)
        self.image_shape = tf.Variable(tf.zeros([rank], tf.int32), trainable=False)  # (batch, ...) of the images
        self.resize(shape)
        self.iterate = tf.function(self._iterate, input_signature=[tf.TensorSpec([], tf.int32)], autograph=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Return the (batch, ...) shape of the images this optimiser holds now."""
        return tuple(int(s) for s in self.image_shape.numpy())

    def _shapes(self, shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Return each state variable's shape for images of `shape` (batch, ...)."""
        b, n, m = int(shape[0]), int(np.prod(shape[1:])), self.memory
        return {
            **dict.fromkeys(("x", "g", "d", "trial", "evaluated", "best_x"), (b, n)),
            **dict.fromkeys(("f", "t", "scale", "best_f", "head", "count", "backtracks", "fresh"), (b,)),
            **dict.fromkeys(SLOTTED, (b, m, n)),
            **dict.fromkeys(("sy", "yy"), (b, m, m)),
        }

    def _variables(self, name: str) -> list[tf.Variable]:
        """Return the variables holding state `name` (the history's: one per slot)."""
        return {"s_hist": self.s_slots, "y_hist": self.y_slots}[name] if name in SLOTTED else [getattr(self, name)]

    @staticmethod
    def _replace(v: tf.Variable, value) -> None:
        """Give `v` the value `value`, letting go of its old buffer before the new one is made."""
        v.assign(tf.zeros([0] * v.shape.rank, v.dtype))
        v.assign(tf.convert_to_tensor(value, v.dtype))

    def _assign(self, name: str, value: np.ndarray | tf.Tensor) -> None:
        """Set state `name` to `value` (its full shape, as `_shapes` gives it: the history's split into its slots)."""
        held = self._variables(name)
        for j, v in enumerate(held):
            self._replace(v, value[:, j] if name in SLOTTED else value)

    def resize(self, shape: Sequence[int]) -> None:
        """Make the state hold images of `shape` (batch, ...), zeroed; the compiled loop is not traced again."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != int(self.image_shape.shape[0]):
            raise ValueError(f"this optimiser holds images of rank {int(self.image_shape.shape[0])}, got shape {shape}")
        self.image_shape.assign(shape)
        for name, dims in self._shapes(shape).items():
            for v in self._variables(name):  # a history slot holds (b, n) of the (b, m, n)
                self._replace(v, tf.zeros(dims[:1] + dims[2:] if name in SLOTTED else dims, v.dtype))

    def start(self, x0) -> None:
        """Begin a run at x0 (batch, ...) of any size: the memory is cleared, the next evaluation is at x0 itself."""
        x0 = tf.convert_to_tensor(x0, tf.float32)
        self.resize(x0.shape)
        x0 = tf.reshape(tf.clip_by_value(x0, self.lower, self.upper), (x0.shape[0], -1))
        for v in (self.x, self.trial, self.evaluated, self.best_x):
            v.assign(x0)
        self.best_f.assign(tf.fill(tf.shape(self.best_f), math.inf))
        self.fresh.assign(tf.ones_like(self.fresh))

    def state(self) -> list[np.ndarray]:
        """Return the whole optimiser state as arrays (in STATE order), for a checkpoint."""
        return [
            np.stack([v.numpy() for v in self._variables(n)], axis=1) if n in SLOTTED else getattr(self, n).numpy()
            for n in self.STATE
        ]

    def restore(self, arrays: Sequence[np.ndarray], shape: Sequence[int] | None = None) -> bool:
        """Load a state from `state()` for images of `shape` (default: the shape held now); return False (nothing
        changed) if it does not fit them."""
        shape = self.shape if shape is None else tuple(int(s) for s in shape)
        shapes = self._shapes(shape)
        if (
            len(shape) != int(self.image_shape.shape[0])
            or len(arrays) != len(self.STATE)
            or any(tuple(np.shape(a)) != shapes[name] for name, a in zip(self.STATE, arrays))
        ):
            return False
        self.image_shape.assign(shape)
        for name, a in zip(self.STATE, arrays):
            self._assign(name, a)
        return True

    def best(self) -> np.ndarray:
        """Return each image's best evaluated point so far, shape (batch, ...)."""
        return self.best_x.numpy().reshape(self.shape)

    def last(self) -> np.ndarray:
        """Return the point of the latest evaluation, shape (batch, ...)."""
        return self.evaluated.numpy().reshape(self.shape)

    def _free(self, x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        """Return the mask of variables not held at a bound (held: at a bound with the gradient pointing outward)."""
        return ~(((x <= self.lower) & (g > 0)) | ((x >= self.upper) & (g < 0)))

    def _direction(self, x: tf.Tensor, g: tf.Tensor, count: tf.Tensor, head: tf.Tensor) -> tf.Tensor:
        """Return the L-BFGS direction -H g on the free variables, each image with its own memory.

        H is the two-loop recursion's inverse-Hessian estimate, applied in its compact form (Byrd, Nocedal and
        Schnabel 1994): H q = gamma q + S v - gamma Y u, u = R^-1 S'q, v = R^-T ((D + gamma Y'Y) u - gamma Y'q), with R
        the upper triangle of S'Y in age order and D its diagonal. S'Y and Y'Y are kept up to date as pairs arrive
        (`_remember`), so a direction reads the memory four times (S'q, Y'q, S v, Y u), the same maths as 4m small
        vector operations. Unused slots get a unit row in R and zeros elsewhere, so they contribute nothing.
        """
        m = self.memory
        free = self._free(x, g)
        q = tf.where(free, g, 0.0)
        order = (head[:, None] - count[:, None] + tf.range(m)[None]) % m  # age order: oldest used slot first
        used = tf.range(m)[None] < count[:, None]  # (b, m) in age order
        both = tf.cast(used[:, :, None] & used[:, None, :], tf.float32)

        def in_age_order(a: tf.Tensor) -> tf.Tensor:  # (b, m, m) slot-indexed -> age-indexed
            return tf.gather(tf.gather(a, order, axis=1, batch_dims=1), order, axis=2, batch_dims=1)

        sy = in_age_order(self.sy) * both
        yy = in_age_order(self.yy) * both
        zero = tf.zeros_like(count[:, None], tf.float32)
        sq = tf.where(used, tf.gather(self._dots(self.s_slots, q), order, batch_dims=1), zero)
        yq = tf.where(used, tf.gather(self._dots(self.y_slots, q), order, batch_dims=1), zero)
        newest = tf.maximum(count - 1, 0)[:, None]
        sy_new = tf.gather(tf.linalg.diag_part(sy), newest, batch_dims=1)[:, 0]
        yy_new = tf.gather(tf.linalg.diag_part(yy), newest, batch_dims=1)[:, 0]
        gamma = tf.where(count > 0, sy_new / tf.maximum(yy_new, 1e-30), 1.0)
        eye = tf.eye(m, batch_shape=tf.shape(x)[:1])
        r = tf.linalg.band_part(sy, 0, -1) + eye * (1.0 - tf.cast(used, tf.float32))[:, None, :]
        u = tf.linalg.triangular_solve(r, sq[..., None], lower=False)
        rhs = tf.linalg.diag_part(sy)[..., None] * u + gamma[:, None, None] * (yy @ u - yq[..., None])
        v = tf.linalg.triangular_solve(r, rhs, lower=False, adjoint=True)
        back = (tf.range(m)[None] - head[:, None] + count[:, None]) % m  # age of each slot: order's inverse
        u_slot = tf.gather(u[..., 0], back, batch_dims=1)
        v_slot = tf.gather(v[..., 0], back, batch_dims=1)
        hq = gamma[:, None] * q
        for j, (s, y) in enumerate(zip(self.s_slots, self.y_slots)):  # one slot at a time: one temporary vector
            with tf.control_dependencies([hq]):
                hq = hq + v_slot[:, j, None] * s - (gamma * u_slot[:, j])[:, None] * y
        return -tf.where(free, hq, 0.0)

    @staticmethod
    def _dots(slots: Sequence[tf.Variable], v: tf.Tensor) -> tf.Tensor:
        """Return (b, m): each slot's per-image dot product with the (b, n) tensor `v`."""
        # A product and a row sum, not a batched matmul (whose rounding changes with the batch size, so a sweep's
        # image would leave its single run's path); one slot after another, so one temporary vector at a time.
        dots: list[tf.Tensor] = []
        for slot in slots:
            with tf.control_dependencies(dots[-1:]):
                dots.append(tf.reduce_sum(slot * v, axis=1))
        return tf.stack(dots, axis=1)

    def _remember(self, s: tf.Tensor, y: tf.Tensor, store: tf.Tensor, head: tf.Tensor) -> tf.Tensor:
        """Write (s, y) into slot `head` of the images that store a pair, update their S'Y and Y'Y; return True."""
        m = self.memory
        for j in range(m):
            write = store & tf.equal(head, j)  # (b,): the images whose pair goes to slot j

            def put(j=j, write=write):  # a whole slot replaced (see __init__): no copy of the history
                for slots, new in ((self.s_slots, s), (self.y_slots, y)):
                    slots[j].assign(tf.where(write[:, None], new, slots[j]))
                return tf.constant(True)

            tf.cond(tf.reduce_any(write), put, lambda: tf.constant(False))
        y_dots = tf.stack([self._dots(self.y_slots, s), self._dots(self.y_slots, y)], axis=1)  # (b, 2, m)
        s_dots = self._dots(self.s_slots, y)  # s_i.y
        row = tf.one_hot(head, m, on_value=True, off_value=False)  # (b, m): the slot written
        keep = ~store[:, None, None]
        for mat, rows, cols in ((self.sy, y_dots[:, 0], s_dots), (self.yy, y_dots[:, 1], y_dots[:, 1])):
            new = tf.where(row[:, :, None], rows[:, None, :], mat)  # row `head`: the new s (or y) against every y
            new = tf.where(row[:, None, :], cols[:, :, None], new)  # column `head`: every s (or y) against the new y
            mat.assign(tf.where(keep, mat, new))
        return tf.constant(True)

    def _step(self) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Evaluate every image's trial point and advance its line search; return (its terms, all finite?)."""
        b, m = tf.shape(self.trial)[0], self.memory
        xt = tf.identity(self.trial)
        terms, grad = self.fn(tf.reshape(xt, self.image_shape))
        raw_f = tf.convert_to_tensor(terms["total"], tf.float32)
        raw_g = tf.reshape(tf.convert_to_tensor(grad, tf.float32), (b, -1))
        finite = tf.math.is_finite(raw_f) & tf.reduce_all(tf.math.is_finite(raw_g), axis=1)
        better = finite & (raw_f < self.best_f)
        self.best_x.assign(tf.where(better[:, None], xt, self.best_x))
        self.best_f.assign(tf.where(better, raw_f, self.best_f))
        self.evaluated.assign(xt)

        fresh = self.fresh
        scale = tf.where(fresh, objective_scale(raw_g, self.first_step), self.scale)
        self.scale.assign(scale)
        ft, gt = raw_f / scale, raw_g / scale[:, None]
        x, f, g = tf.identity(self.x), tf.identity(self.f), tf.identity(self.g)
        accept = finite & (fresh | (ft <= f + ARMIJO * _dot(g, xt - x)))

        s, y = xt - x, gt - g
        sy = _dot(s, y)
        store = accept & ~fresh & (sy > CURVATURE_EPS)
        head, count = tf.identity(self.head), tf.identity(self.count)
        tf.cond(tf.reduce_any(store), lambda: self._remember(s, y, store, head), lambda: tf.constant(False))
        head = tf.where(store, (head + 1) % m, head)
        count = tf.where(store, tf.minimum(count + 1, m), count)

        x = tf.where(accept[:, None], xt, x)
        f = tf.where(accept, ft, f)
        g = tf.where(accept[:, None], gt, g)
        backtracks = tf.where(accept, 0, self.backtracks + 1)
        failed = ~accept & (backtracks >= MAX_BACKTRACKS)
        count = tf.where(failed, 0, count)
        backtracks = tf.where(failed, 0, backtracks)
        renew = accept | failed  # these images need a new direction; the others halve their step
        d = tf.cond(tf.reduce_any(renew), lambda: self._direction(x, g, count, head), lambda: self.d)
        steepest = -tf.where(self._free(x, g), g, 0.0)
        restart = renew & (_dot(g, d) >= 0)  # not a descent direction: forget the memory
        count = tf.where(restart, 0, count)
        d = tf.where(restart[:, None], steepest, d)
        d = tf.where(renew[:, None], d, self.d)
        first_t = (
            self.first_step / tf.maximum(tf.reduce_max(tf.abs(d), axis=1), 1e-30)
            if self.first_step > 0
            else tf.ones_like(f)
        )
        t = tf.where(renew, tf.where(count == 0, first_t, 1.0), 0.5 * self.t)
        for v, value in (
            (self.x, x),
            (self.f, f),
            (self.g, g),
            (self.d, d),
            (self.t, t),
            (self.head, head),
            (self.count, count),
            (self.backtracks, backtracks),
            (self.trial, tf.clip_by_value(x + t[:, None] * d, self.lower, self.upper)),
        ):
            v.assign(value)
        self.fresh.assign(tf.zeros_like(fresh))
        return {k: tf.convert_to_tensor(terms[k], tf.float32) for k in self.terms}, tf.reduce_all(finite)

    def _iterate(self, k: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return ({term: (n, batch) values of each evaluation}, n) after up to k evaluations (fewer on a non-finite
        one)."""
        arrays = {name: tf.TensorArray(tf.float32, size=0, dynamic_size=True) for name in self.terms}

        def body(i, ok, arrays):
            terms, finite = self._step()
            return i + 1, finite, {name: arrays[name].write(i, terms[name]) for name in self.terms}

        n, _, arrays = tf.while_loop(
            lambda i, ok, arrays: (i < k) & ok, body, (tf.constant(0), tf.constant(True), arrays)
        )
        return {name: arrays[name].stack() for name in self.terms}, n
