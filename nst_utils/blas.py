"""Keep OpenBLAS (numpy's and scipy's) to one thread while scipy's L-BFGS-B drives TensorFlow.

L-BFGS-B's own vector work is tiny, but OpenBLAS threads keep spinning after each call and take the cores TensorFlow's
convolutions need: on a 2-core CPU an evaluation took 1.7-2.5x as long at 128 px. This is what threadpoolctl does,
without the dependency: find the loaded OpenBLAS libraries and call their set_num_threads.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_PREFIXES = ("openblas_", "scipy_openblas_")
_SUFFIXES = ("", "64_")


def _libraries() -> list[tuple[object, object]]:
    """Return (get_num_threads, set_num_threads) for each OpenBLAS loaded in this process (Linux; else none)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({p for p in (line.split()[-1] for line in f) if "openblas" in p.lower() and ".so" in p})
    except OSError:
        return found
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _PREFIXES:
            for suf in _SUFFIXES:
                get = getattr(lib, f"{pre}get_num_threads{suf}", None)
                put = getattr(lib, f"{pre}set_num_threads{suf}", None)
                if get is not None and put is not None:
                    found.append((get, put))
                    break
            else:
                continue
            break
    return found


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the body with every loaded OpenBLAS limited to one thread, restoring the counts afterwards."""
    libs = []
    try:
        for get, put in _libraries():
            n = int(get())
            put(1)
            libs.append((put, n))
    except Exception:  # never let a BLAS tweak break a run
        pass
    try:
        yield
    finally:
        for put, n in libs:
            with contextlib.suppress(Exception):
                put(n)
