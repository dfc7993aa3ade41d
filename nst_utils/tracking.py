"""The tracker: records each loss evaluation, keeps the best image, drives the progress bar, callback and stopping."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

# callback(step, image HxWx3 in [0,1], terms as floats) -> True to stop early
Callback = Callable[[int, np.ndarray, dict], "bool | None"]
# state() -> (the optimiser's current image, its arrays): what a checkpoint needs to continue the run
State = Callable[[], tuple[np.ndarray, list[np.ndarray]]]
TERMS = ("content", "style", "tv", "temporal", "total")  # temporal: video (0 in a still image's run)
TOL_WINDOW = 20  # `tol` compares the best objective now with the best TOL_WINDOW evaluations ago


class Tracker:
    """Records each evaluation's terms, keeps the best image, drives the progress bar and callback."""

    def __init__(
        self,
        steps: int,
        callback: Callback | None,
        progress: bool,
        desc: str,
        tol: float | None = None,
        state: State | None = None,
    ):
        self.history: dict[str, list[float]] = {k: [] for k in TERMS}
        self.tol = tol
        self.best_loss = math.inf
        self.best_image: np.ndarray | None = None
        self.callback = callback
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
        self.stop = False
        self.message = ""
        self.state = state

    @property
    def count(self) -> int:
        """Return the number of evaluations recorded."""
        return len(self.history["total"])

    def record(self, image: np.ndarray, terms: dict) -> bool:
        """Record one evaluation; return False (and set a message) if the loss is not finite."""
        vals = {k: float(np.sum(terms[k])) for k in TERMS}
        better = vals["total"] < self.best_loss
        if not self._append(vals):
            return False
        if better:
            self.best_image = image
        self._notify(1, lambda: image, vals)
        return True

    def record_batch(self, images: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        """Record one evaluation of a batch of one image ((1, H, W, 3) and its (1,) terms)."""
        self.record(images[0], terms)

    def record_chunk(self, terms: dict[str, np.ndarray], images: Callable[[], np.ndarray]) -> bool:
        """Record n evaluations (terms: one (n,) or (n, 1) array each), notify once; return False if one is not finite.

        The best image stays with the optimiser; `images()` fetches the latest evaluated batch only if a callback
        wants it (the callback sees `shown(images)`: the one image of a batch of one here, the batch in a BatchTracker).
        """
        rows = [self._row(terms, i) for i in range(len(terms["total"]))]
        recorded = 0
        for vals in rows:
            if not self._append(vals):
                break
            recorded += 1
        if recorded:
            self._notify(recorded, self.shown(images), rows[recorded - 1])
        return recorded == len(rows)

    @staticmethod
    def shown(images: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        """Return a fetcher of what the callback sees from a fetcher of the latest batch: its one HxWx3 image."""
        return lambda: images()[0]

    def _row(self, terms: dict[str, np.ndarray], i: int) -> dict:
        """Return evaluation `i` of a chunk's terms as one row (floats here; per-image arrays in a BatchTracker)."""
        return {k: float(np.sum(terms[k][i])) for k in TERMS}

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

    def snapshot(
        self, start: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, dict[str, list[float]], list[np.ndarray]]:
        """Return (current image, best image, best loss, history copy, optimiser arrays); `start` if no image yet."""
        best = self.best_image if self.best_image is not None else start
        image, opt = self.state() if self.state is not None else (best, [])
        return image, best, float(self.best_loss), {k: list(v) for k, v in self.history.items()}, list(opt)

    def keep_best(self, best: np.ndarray, found: np.ndarray) -> None:
        """Take the optimiser's best image ((1, H, W, 3)) if it found one (`found`: (1,) booleans)."""
        if found[0]:
            self.best_image = best[0]

    def restore(self, history: dict[str, list[float]], best_image: np.ndarray | None, best_loss: float) -> None:
        """Continue from a saved run: its loss history, best image and loss, and the progress bar's count."""
        for k in self.history:
            self.history[k] = list(history.get(k, []))
        self.best_loss, self.best_image = best_loss, best_image
        self.bar.update(self.count)

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


def converged(totals: Sequence[float], tol: float | None, window: int = TOL_WINDOW) -> bool:
    """Return True if the best objective fell by less than `tol` (relative) over the last `window` evaluations."""
    if not tol or len(totals) <= window:
        return False
    before, now = min(totals[:-window]), min(totals)
    return before - now < tol * abs(now)


STALLED = "no evaluation lowered the loss below the start's, so the result is the start image"


def kept_start(totals: Sequence[float], best_loss: float) -> bool:
    """Return True if a run of several evaluations never lowered its loss below the first (its start's): its best
    image is the start image (e.g. a line search that found no lower point near an already optimal start)."""
    return len(totals) > 1 and math.isfinite(totals[0]) and best_loss >= totals[0]


class Stop(Exception):
    """Raised inside scipy's loop to end the L-BFGS run early."""


class BatchTracker(Tracker):
    """A Tracker for a batch (`sweep`): per-image histories, best losses and images; chunks recorded as Tracker does."""

    def __init__(self, n: int, steps: int, callback: Callable | None, progress: bool, desc: str):
        super().__init__(steps, callback, progress, desc)
        self.history = [{k: [] for k in TERMS} for _ in range(n)]
        self.best_loss = np.full(n, np.inf)
        self.best_image: list[np.ndarray | None] = [None] * n
        self.evals = 0

    @property
    def count(self) -> int:
        """Return the number of batched evaluations recorded."""
        return self.evals

    def record(self, images: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        """Record one batched evaluation (images are the points the terms describe)."""
        better = np.asarray(terms["total"]) < self.best_loss
        if self._append(terms):
            for i in np.flatnonzero(better):
                self.best_image[i] = images[i].copy()
            self._notify(1, lambda: images, terms)

    def record_batch(self, images: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        """Record one batched evaluation (as `record`)."""
        self.record(images, terms)

    def keep_best(self, best: np.ndarray, found: np.ndarray) -> None:
        """Take each image's best from the optimiser ((B, H, W, 3)) where it found one (`found`: (B,) booleans)."""
        self.best_image = [best[i] if found[i] else self.best_image[i] for i in range(len(best))]

    def _row(self, terms: dict[str, np.ndarray], i: int) -> dict:
        """Return evaluation `i` of a chunk's (n, B) terms: {term: (B,) per-image values}."""
        return {k: terms[k][i] for k in TERMS}

    def _append(self, terms: dict[str, np.ndarray]) -> bool:
        """Append one batched evaluation's per-image terms; return False (stop, message) if one is not finite."""
        total = np.asarray(terms["total"], np.float64).reshape(-1)
        if not np.all(np.isfinite(total)):
            self.stop = True
            self.message = f"loss became non-finite at step {self.evals + 1}; kept the best images so far"
            return False
        self.evals += 1
        for i in range(len(total)):
            for k in TERMS:
                self.history[i][k].append(float(terms[k][i]))
        self.best_loss = np.minimum(self.best_loss, total)
        return True

    @staticmethod
    def shown(images: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
        """Return `images`: a sweep's callback sees the whole latest batch."""
        return images

    def _notify(self, n: int, images: Callable[[], np.ndarray], terms: dict[str, np.ndarray]) -> None:
        """Advance the progress bar by n and call the callback with the latest batch (True from it stops the run)."""
        self.bar.update(n)
        if self.callback is not None:
            per_image = [{k: float(terms[k][i]) for k in TERMS} for i in range(len(terms["total"]))]
            if self.callback(self.evals, images(), per_image):
                self.stop, self.message = True, "stopped by callback"
