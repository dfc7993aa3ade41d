"""A tiny timing helper shared by the precision probe and the benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def best_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """Return the shortest wall time of `reps` calls of `fn` after one untimed warm-up call (tracing, caches)."""
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
