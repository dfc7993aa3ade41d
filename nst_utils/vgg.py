"""The VGG19 layer table: block structure, layer names, channels, poolings and precisions (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import NSTError

# (block, number of 3x3 convolutions, channels) of VGG19 without its classifier.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
CONV_LAYERS = tuple(f"block{b}_conv{i}" for b, n, _ in BLOCKS for i in range(1, n + 1))
LAYERS = tuple(name for b, n, _ in BLOCKS for name in [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"])
CHANNELS = {f"block{b}_conv{i}": c for b, n, c in BLOCKS for i in range(1, n + 1)} | {f"block{b}_pool": c for b, _, c in BLOCKS}
POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "float32", "bfloat16")  # bfloat16: convolutions after the first in bf16, outputs float32
FLOAT32_LAYERS = ("block1_conv1",)  # kept in float32 under bfloat16: the input's small changes must not round away


def check_layers(names: Sequence[str]) -> tuple[str, ...]:
    """Return `names` as a tuple if all are VGG19 layer names, else raise an error listing the valid ones."""
    bad = [n for n in names if n not in LAYERS]
    if bad:
        raise NSTError(f"unknown VGG19 layer(s) {', '.join(map(repr, bad))}; valid: {', '.join(LAYERS)}")
    if not names:
        raise NSTError("no layers given; choose from " + ", ".join(CONV_LAYERS))
    return tuple(names)


def check_pooling(pooling: str) -> str:
    """Return `pooling` if it is one of POOLINGS, else raise an error naming them."""
    if pooling not in POOLINGS:
        raise NSTError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def check_precision(precision: str) -> str:
    """Return `precision` if it is one of PRECISIONS, else raise an error naming them."""
    if precision not in PRECISIONS:
        raise NSTError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def depth(layer: str) -> int:
    """Return a layer's position in VGG19 (0 for block1_conv1)."""
    return LAYERS.index(layer)


def short_name(layer: str) -> str:
    """Return the paper's name of a Keras VGG19 layer, e.g. 'conv5_2' for 'block5_conv2'."""
    block, kind = layer.split("_")  # "block5", "conv2"
    return f"conv{block[5:]}_{kind[4:]}" if kind.startswith("conv") else f"pool{block[5:]}"
