"""This process on this machine: the memory it can still use (system memory capped by a cgroup limit), holds now and
held at its peak, wall-time probes, and TensorFlow imported without its C++ start-up lines."""

from __future__ import annotations

import functools
import gc
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1 << 20
SAFETY = 0.9  # use at most this share of the available memory


def cgroup_free() -> int | None:
    """Return the bytes left under this process's cgroup (v2 or v1) memory limit, or None if unlimited."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return max(0, int(text) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int:
    """Return the memory this process can still use: the system's available memory, capped by a cgroup limit."""
    import psutil

    free = psutil.virtual_memory().available
    cg = cgroup_free()
    return min(free, cg) if cg is not None else free


@functools.cache
def gpu_memory_bytes() -> int | None:
    """Return the first GPU's total memory in bytes as `nvidia-smi` reports it, or None where it cannot tell."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return int(float(out.split()[0]) * MIB)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def resident_bytes() -> int:
    """Return this process's current resident memory in bytes."""
    import psutil

    return psutil.Process().memory_info().rss


def peak_memory_mb() -> float:
    """Return this process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """Return the shortest wall time of `reps` calls of `fn` after one untimed warm-up call (tracing, caches)."""
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def median_ratio(fn_a: Callable[[], object], fn_b: Callable[[], object], pairs: int = 9) -> float:
    """Return the median over `pairs` alternated calls of time(fn_a) / time(fn_b), after one warm-up call of each.

    Alternating puts both calls of a pair under the same load, and the median ignores the pairs a burst hit: under
    two busy processes on two cores this stayed >= 1.4 for a ratio of ~1.75, where best-of-ten timings fell to 0.98.
    """
    fn_a(), fn_b()
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        ratios.append((t1 - t0) / max(time.perf_counter() - t1, 1e-9))
    return statistics.median(ratios)


def import_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with C++ stderr chatter hidden (`NST_DEBUG=1` shows it), then
    freeze the heap it made (`freeze_heap`)."""
    if "tensorflow" not in sys.modules and not os.environ.get("NST_DEBUG"):
        _import_quietly()
    freeze_heap()


@functools.cache
def freeze_heap() -> None:
    """Move every object alive now (TensorFlow's and Keras' ~370k module objects) out of the garbage collector's view.

    They live as long as the process anyway; left in view, every full collection walks them, and tracing a graph
    allocates enough to trigger many: a third of the time to trace the L-BFGS loop at 128 px went to them. Once per
    process (Python's `gc.freeze`, as for forked servers).
    """
    gc.freeze()


def _import_quietly() -> None:
    """Import TensorFlow and list its devices with file descriptor 2 pointed at /dev/null (where there is one)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no real stderr (some embedded interpreters): import as usual
        import tensorflow  # noqa: F401

        return
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
