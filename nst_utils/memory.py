"""Memory: estimate what a run needs from the image size and refuse, with the largest size that fits, before starting.

The model (fitted on CPU to the peak RSS of `nst stylize` at several sizes; the README's layout section has the fit):

    peak = BASE + ACTIVATION_FACTOR * (VGG19 activations up to the deepest layer, float32)
                + (2 * maxcor + LBFGS_EXTRA_VECTORS) * 3HW * 8 bytes        (scipy's L-BFGS-B, float64)
             or + (2 * maxcor + TF_LBFGS_VECTORS) * 3HW * 4 bytes           (the projected L-BFGS in TF, float32)

`BASE` is TensorFlow, the VGG19 weights and Python; ACTIVATION_FACTOR covers what the forward pass keeps for the
backward pass (convolution inputs and ReLU outputs), the gradients flowing back, and the style image's forward pass.
Both share the same H*W scaling, so they were fitted together.

A tiled run (tiling.py) holds one tile's window of activations instead of the image's, plus TILED_IMAGE_VECTORS
whole-image float32 arrays and the content targets. `fit` decides how a run computes: untiled when it fits, else in
the largest tiles that fit (the fewer the tiles, the less halo is computed twice), with an L-BFGS history of at most
HISTORY_BYTES (20 pairs up to about 2048x2048 px, 5 at 4096x4096). On a GPU the budget is the device's memory
(activations and the optimiser live there); without a way to read it, GPU runs are not checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import assets, host
from .config import (
    CHANNELS,
    CONTENT_LAYERS,
    LAYERS,
    STYLE_LAYERS,
    NSTError,
    layer_shapes,
    min_halo,
    reach,
    tile_bounds,
    tile_count,
    tile_stride,
)
from .host import MIB, SAFETY  # noqa: F401 - re-exported: the estimate's unit and share of free memory
from .images import fit_long_side

BASE_BYTES = 750 * MIB  # TensorFlow + VGG19 weights + interpreter (the fit's intercept)
ACTIVATION_FACTOR = 3.6  # bytes kept per activation byte (forward kept for backward + gradients + transients)
# Under --precision bfloat16 the convolutions keep half-size activations: peaks of 1.53, 3.63 and 12.09 GiB at 512,
# 1024 and 2048 px (book/cli.md's table) put the factor at 2.0, 1.8 and 1.75. "auto" before it is resolved counts
# float32's.
ACTIVATION_FACTORS = {"bfloat16": 2.0}
LBFGS_EXTRA_VECTORS = 12  # scipy L-BFGS-B work arrays besides the 2*maxcor history, each 3HW float64
TF_LBFGS_VECTORS = 14  # lbfgs.ProjectedLBFGS: 6 state vectors (x, g, d, trial, evaluated, best) + temporaries, float32
ADAM_VECTORS = 6  # image, two moments, gradient, copies; float32
TILED_IMAGE_VECTORS = 6  # whole-image float32 arrays of a tiled evaluation: gradient, a tile's padded gradient, TV's...
MAX_HISTORY = 20  # L-BFGS (s, y) pairs kept when they fit
MIN_HISTORY = 3
HISTORY_BYTES = 2 << 30  # the most the L-BFGS history may take (float32): shorter histories beyond about 2048x2048
MIN_TILE = 128  # the smallest tile chosen automatically (its 96 px halos would make it about 5x slower than untiled)
INFO_TILE = 512  # `nst info` says how large a picture fits in tiles of this size
SKIP_ENV = "NST_NO_MEMORY_CHECK"
BUDGET_ENV = "NST_MEMORY_BUDGET"  # a memory budget in GiB that replaces the measured one (e.g. 6)


def activation_elements(height: int, width: int, layers: Sequence[str]) -> int:
    """Return the number of float activations VGG19 produces for one HxW image up to the deepest of `layers`."""
    deepest = max(layers, key=LAYERS.index)
    return sum(h * w * c for _, h, w, c in layer_shapes(height, width, deepest))


def history(height: int, width: int, batch: int = 1) -> int:
    """Return the L-BFGS history length (pairs) for HxW images: MAX_HISTORY, shorter where it would pass
    HISTORY_BYTES."""
    pair = 2 * height * width * 3 * batch * 4
    return int(min(MAX_HISTORY, max(MIN_HISTORY, HISTORY_BYTES // pair)))


def window(height: int, width: int, tile: int, layers: Sequence[str]) -> tuple[int, int]:
    """Return the largest window (rows, columns) a tile of `tile` px reads from an HxW image, its halo included."""
    stride, halo = tile_stride(layers), min_halo(layers)

    def side(size: int) -> int:
        count = tile_count(size, tile, stride)
        if count == 1:
            return size
        core = max(end - start for start, end in (tile_bounds(i, count, size, stride) for i in range(count)))
        return min(core + 2 * halo, size)

    return side(height), side(width)


def estimate_bytes(
    height: int,
    width: int,
    layers: Sequence[str] | None = None,
    optimizer: str = "lbfgs",
    maxcor: int = MAX_HISTORY,
    batch: int = 1,
    tile: int | None = None,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    precision: str = "float32",
) -> int:
    """Return the estimated peak resident memory in bytes of a run producing an HxW image (in tiles of `tile` px if
    given; a tiled run holds its `content_layers`' whole targets) with VGG19 in `precision`."""
    layers = tuple(layers) if layers else CONTENT_LAYERS + STYLE_LAYERS
    pixels = height * width * 3 * batch
    seen = window(height, width, tile, layers) if tile else (height, width)
    acts = activation_elements(*seen, layers) * 4 * batch
    extra = 0
    if seen != (height, width):  # tiled: whole-image arrays and the content targets
        extra = TILED_IMAGE_VECTORS * pixels * 4 + sum(
            (height // reach(n)[2]) * (width // reach(n)[2]) * CHANNELS[n] * 4 * batch for n in content_layers
        )
    if optimizer == "lbfgs-scipy":
        opt = (2 * maxcor + LBFGS_EXTRA_VECTORS) * pixels * 8
    elif optimizer == "lbfgs":
        opt = (2 * maxcor + TF_LBFGS_VECTORS) * pixels * 4
    else:
        opt = ADAM_VECTORS * pixels * 4
    return int(BASE_BYTES + ACTIVATION_FACTORS.get(precision, ACTIVATION_FACTOR) * acts + extra + opt)


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


@dataclass(frozen=True)
class Fit:
    """How a run computes within memory: in tiles of `tile` px (0: untiled), with an L-BFGS history of `history`
    pairs, needing about `need` bytes of a `budget` (None: not checked); `note` says what was chosen and why."""

    tile: int
    history: int
    need: int
    budget: int | None
    note: str = ""
    whole_pixels: int = 0  # automatic tiles: smaller images (coarse scales) fit untiled, and are evaluated whole


def budget() -> tuple[int | None, str]:
    """Return (the bytes a run may use, 'cpu' or 'gpu'): NST_MEMORY_BUDGET GiB if set, a GPU's memory where TensorFlow
    sees one (None if unknown), else this process's share of the host's available memory; None when checks are
    off."""
    try:
        import tensorflow as tf  # already imported by whoever plans a run; host's probe of the devices

        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    except Exception:  # no TensorFlow device query: the host's memory, as on a CPU
        device = "cpu"
    if os.environ.get(SKIP_ENV):
        return None, device
    if os.environ.get(BUDGET_ENV):
        try:
            return int(float(os.environ[BUDGET_ENV]) * 2**30), device
        except ValueError:
            raise NSTError(f"{BUDGET_ENV} must be a number of GiB, got {os.environ[BUDGET_ENV]!r}") from None
    if device == "gpu":
        total = host.gpu_memory_bytes()
        return (int(total * SAFETY) if total else None), device
    already = min(host.resident_bytes(), BASE_BYTES)  # the part of BASE this process holds already
    return int(host.available_bytes() * SAFETY) + already, device


def _gib(n: int) -> str:
    """Return n bytes in GiB, one decimal, with the unit."""
    return f"{n / 2**30:.1f} GiB"


def run_need(config, height: int, width: int, tile: int | None = None) -> int:
    """Return the estimated peak bytes of an HxW run with `config` (its layers, optimiser and precision; the L-BFGS
    history this size keeps), in tiles of `tile` px if given."""
    keep = history(height, width) if config.optimizer == "lbfgs" else MAX_HISTORY
    layers = tuple(config.content_layers) + tuple(config.style_layers)
    return estimate_bytes(
        height,
        width,
        layers,
        config.optimizer,
        keep,
        tile=tile,
        content_layers=config.content_layers,
        precision=config.precision,
    )


def fit(height: int, width: int, config) -> Fit:
    """Return how an HxW run with `config` fits in memory (untiled when it can; config.tile forces a tile size, 0
    forbids tiles), raising NSTError with the largest size that would fit if nothing does."""
    layers = tuple(config.content_layers) + tuple(config.style_layers)
    pairs = history(height, width) if config.optimizer == "lbfgs" else MAX_HISTORY

    def need(tile: int | None, h: int = height, w: int = width) -> int:
        return run_need(config, h, w, tile)

    limit, device = budget()
    short = f"L-BFGS keeps {pairs} (s, y) pairs, not {MAX_HISTORY}, at this size" if pairs < MAX_HISTORY else ""
    untiled = need(None)
    if config.tile:
        tiled = need(config.tile)
        if limit is not None and tiled > limit:
            raise NSTError(
                f"a {width}x{height} run in tiles of {config.tile} px needs about {_gib(tiled)} of memory but only "
                f"{_gib(limit)} is available; use a smaller --tile (at least {tile_stride(layers)}) or --size, or "
                f"leave --tile out to let nst choose (set {SKIP_ENV}=1 to skip this check)"
            )
        return Fit(config.tile, pairs, tiled, limit, short)
    if limit is None or untiled <= limit:
        return Fit(0, pairs, untiled, limit, short)
    stride = tile_stride(layers)
    units = max(height, width) // stride
    sizes = sorted({-(-units // n) * stride for n in range(2, units + 1)} - set(range(MIN_TILE)), reverse=True)
    chosen = next((t for t in sizes if need(t) <= limit), None) if config.tile is None else None
    if chosen is not None:
        count = tile_count(height, chosen, stride) * tile_count(width, chosen, stride)
        note = (
            f"a {width}x{height} run needs about {_gib(untiled)} untiled and {_gib(limit)} is available: computing "
            f"it exactly in {count} tiles of {chosen} px, about {_gib(need(chosen))} (--tile 0 forbids tiles)"
        )
        side = largest_size((height, width), lambda h, w: need(None, h, w), limit, max(height, width))
        whole = int(np.prod(fit_long_side((height, width), side))) if side else 0
        return Fit(chosen, pairs, need(chosen), limit, "; ".join(m for m in (note, short) if m), whole)
    tiles = config.tile is None
    fits = largest_size(
        (height, width), lambda h, w: need(MIN_TILE if tiles else None, h, w), limit, max(height, width)
    )
    hint = f"use --size {fits} or less (the largest that fits now)" if fits else "free some memory"
    how = f"in tiles of {MIN_TILE} px " if tiles else ""
    raise NSTError(
        f"a {width}x{height} run needs about {_gib(need(MIN_TILE) if tiles else untiled)} of memory {how}but only "
        f"{_gib(limit)} is available; {hint}, or close other programs (set {SKIP_ENV}=1 to skip this check)"
    )


def describe(config, shape: tuple[int, int] = (1, 1)) -> str:
    """Return, in words, the memory a run may use here and the largest long side of a `shape` (aspect) run that fits
    it untiled and in tiles, with `config`'s layers and optimiser."""
    limit, device = budget()
    if limit is None:
        return f"memory: not checked ({SKIP_ENV} set, or a GPU whose memory nvidia-smi does not report)"
    untiled = largest_size(shape, lambda h, w: run_need(config, h, w), limit, 1 << 15)
    tiled = largest_size(shape, lambda h, w: run_need(config, h, w, INFO_TILE), limit, 1 << 15)
    h, w = fit_long_side(shape, tiled)
    return (
        f"memory: {_gib(limit)} for a run ({device}); the largest square picture untiled about {untiled} px, in "
        f"tiles of {INFO_TILE} px about {tiled} px (L-BFGS history {history(h, w)} pairs there)"
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


def fit_source(source, config) -> Fit:
    """Return how stylizing `source` with `config` fits in memory (see `fit`; untiled and unchecked if its size is
    unknown: loading it reports why)."""
    shape = source_shape(source, config.size)
    return fit(*shape, config) if shape else Fit(config.tile or 0, MAX_HISTORY, 0, None)
