"""Memory: estimate what a run needs from the image size and refuse, with the largest size that fits, before starting.

The model (fitted on CPU to the peak RSS of `nst stylize` at several sizes; the README's layout section has the fit):

    peak = BASE + ACTIVATION_FACTOR * (VGG19 activations up to the deepest layer, float32)
                + (2 * maxcor + LBFGS_EXTRA_VECTORS) * 3HW * 8 bytes        (scipy's L-BFGS-B, float64)
             or + (2 * maxcor + TF_LBFGS_VECTORS) * 3HW * 4 bytes           (the projected L-BFGS in TF, float32)

`BASE` is TensorFlow, the VGG19 weights and Python; ACTIVATION_FACTOR covers what the forward pass keeps for the
backward pass (convolution inputs and ReLU outputs), the gradients flowing back, and the style image's forward pass.
Both share the same H*W scaling, so they were fitted together. GPU runs keep activations on the device and are not
checked here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from . import assets, host
from .config import CONTENT_LAYERS, LAYERS, STYLE_LAYERS, NSTError, layer_shapes
from .host import MIB, SAFETY  # noqa: F401 - re-exported: the estimate's unit and share of free memory
from .images import fit_long_side

BASE_BYTES = 750 * MIB  # TensorFlow + VGG19 weights + interpreter (the fit's intercept)
ACTIVATION_FACTOR = 3.6  # bytes kept per activation byte (forward kept for backward + gradients + transients)
LBFGS_EXTRA_VECTORS = 12  # scipy L-BFGS-B work arrays besides the 2*maxcor history, each 3HW float64
TF_LBFGS_VECTORS = 14  # lbfgs.ProjectedLBFGS: 6 state vectors (x, g, d, trial, evaluated, best) + temporaries, float32
ADAM_VECTORS = 6  # image, two moments, gradient, copies; float32
SKIP_ENV = "NST_NO_MEMORY_CHECK"


def activation_elements(height: int, width: int, layers: Sequence[str]) -> int:
    """Return the number of float activations VGG19 produces for one HxW image up to the deepest of `layers`."""
    deepest = max(layers, key=LAYERS.index)
    return sum(h * w * c for _, h, w, c in layer_shapes(height, width, deepest))


def estimate_bytes(
    height: int,
    width: int,
    layers: Sequence[str] | None = None,
    optimizer: str = "lbfgs",
    maxcor: int = 20,
    batch: int = 1,
) -> int:
    """Return the estimated peak resident memory in bytes of a run producing an HxW image."""
    layers = tuple(layers) if layers else CONTENT_LAYERS + STYLE_LAYERS
    acts = activation_elements(height, width, layers) * 4 * batch
    pixels = height * width * 3 * batch
    if optimizer == "lbfgs-scipy":
        opt = (2 * maxcor + LBFGS_EXTRA_VECTORS) * pixels * 8
    elif optimizer == "lbfgs":
        opt = (2 * maxcor + TF_LBFGS_VECTORS) * pixels * 4
    else:
        opt = ADAM_VECTORS * pixels * 4
    return int(BASE_BYTES + ACTIVATION_FACTOR * acts + opt)


def largest_size(shape: tuple[int, int], need_at, budget: int, upper: int) -> int:
    """Return the largest long side <= `upper` (at least 16) whose estimate `need_at(h, w)` fits in `budget`, else 0."""
    lo, hi, best = 16, upper, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if need_at(*fit_long_side(shape, mid)) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def check(height: int, width: int, config) -> int:
    """Return the estimated bytes for an HxW run with `config`, raising NSTError if it cannot fit in memory."""
    layers = tuple(config.content_layers) + tuple(config.style_layers)
    batch = 1

    def need_at(h: int, w: int) -> int:
        return estimate_bytes(h, w, layers, config.optimizer, batch=batch)

    need = need_at(height, width)
    if os.environ.get(SKIP_ENV):
        return need
    try:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return need  # activations live in GPU memory; TensorFlow reports its own out-of-memory error there
    except Exception:  # no TensorFlow device query: check host memory as on CPU
        pass
    already = min(host.resident_bytes(), BASE_BYTES)  # the part of BASE this process holds already
    budget = int(host.available_bytes() * SAFETY) + already
    if need <= budget:
        return need
    fits = largest_size((height, width), need_at, budget, max(height, width))
    hint = f"use --size {fits} or less (the largest that fits now)" if fits else "free some memory"
    raise NSTError(
        f"a {width}x{height} run needs about {need / 2**30:.1f} GiB of memory but only "
        f"{budget / 2**30:.1f} GiB is available; {hint}, or close other programs "
        f"(set {SKIP_ENV}=1 to skip this check)"
    )


def source_shape(source, size: int) -> tuple[int, int] | None:
    """Return the (height, width) `source` (array, path, registry name or None for the default) will have at `size`,
    reading only a file's header; None if unknown."""
    if hasattr(source, "shape"):
        shape = tuple(np.shape(source))
        return fit_long_side(shape[-3:-1], size) if len(shape) >= 3 else None
    try:
        path = assets.image_path(source if source is not None else assets.default_images()[0])
        with Image.open(path) as img:
            w, h = img.size
    except Exception:  # unreadable or missing: loading reports it properly a moment later
        return None
    return fit_long_side((h, w), size)


def check_source(source, config) -> int:
    """Return the estimated bytes of stylizing `source` with `config` (0 if its size is unknown); raise NSTError if
    it cannot fit."""
    shape = source_shape(source, config.size)
    return check(*shape, config) if shape else 0
