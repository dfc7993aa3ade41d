"""The facts and the configuration: the one error type, VGG19's layer table, and the StyleConfig every front end
(CLI, notebooks, sliders) fills in, with its validation. No TensorFlow here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace


class NSTError(Exception):
    """A user-facing failure; the CLI prints its message as one line and exits non-zero."""


# --- VGG19's layer table -------------------------------------------------------------------------------------------

# (block, number of 3x3 convolutions, channels) of VGG19 without its classifier.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
CONV_LAYERS = tuple(f"block{b}_conv{i}" for b, n, _ in BLOCKS for i in range(1, n + 1))
LAYERS = tuple(
    name for b, n, _ in BLOCKS for name in [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"]
)
CHANNELS = {f"block{b}_conv{i}": c for b, n, c in BLOCKS for i in range(1, n + 1)} | {
    f"block{b}_pool": c for b, _, c in BLOCKS
}
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


def layer_shapes(height: int, width: int, deepest: str = LAYERS[-1]) -> list[tuple[str, int, int, int]]:
    """Return (layer, H, W, C) of each VGG19 layer up to `deepest` for an HxW image (each 2x2 pooling floors)."""
    out, h, w = [], height, width
    for name in LAYERS[: depth(deepest) + 1]:
        if name.endswith("_pool"):
            h, w = h // 2, w // 2
        out.append((name, h, w, CHANNELS[name]))
    return out


# --- what a layer's unit sees: the geometry of tiled evaluation (tiling.py, memory.py) ------------------------------


def reach(layer: str) -> tuple[int, int, int]:
    """Return (left, right, stride): unit i of `layer` sees the input pixels [stride*i - left, stride*i + right]."""
    left = right = 0
    stride = 1
    for name in LAYERS[: depth(layer) + 1]:
        if name.endswith("_pool"):  # 2x2 window, stride 2: unit j pools units 2j and 2j+1 below
            right += stride
            stride *= 2
        else:  # 3x3 convolution, same padding: unit i sees units i-1, i, i+1 below
            left += stride
            right += stride
    return left, right, stride


def receptive_field(layer: str) -> int:
    """Return the side in pixels of a `layer` unit's receptive field (156 for block5_conv1, 188 for block5_conv2)."""
    left, right, _ = reach(layer)
    return left + right + 1


def tile_stride(layers: Sequence[str]) -> int:
    """Return the stride in pixels of the deepest of `layers`: tiles and halos are multiples of it."""
    return max(reach(n)[2] for n in layers)


def min_halo(layers: Sequence[str]) -> int:
    """Return the narrowest halo (px, a multiple of the stride) that makes every owned position of `layers` exact.

    A tile owning the pixel rows [a, b) owns the units i with stride*i in [a, b) of each layer; they see the rows
    [a - left, b - stride + right], which the read window [a - halo, b + halo) must hold (at the image's border the
    zero padding is the same for the tile as for the image).
    """
    need = max(max(left, right - stride + 1) for left, right, stride in map(reach, layers))
    step = tile_stride(layers)
    return -(-need // step) * step


def tile_count(size, tile: int, stride: int):
    """Return how many tiles of at most about `tile` px cut a side of `size` >= `stride` px (ints or integer tensors
    alike): the fewest that hold the side's whole strides in `tile` px each."""
    return ((size // stride) * stride + tile - 1) // tile


def tile_bounds(index, count, size, stride: int):
    """Return (start, end) px of tile `index` of `count` along a side of `size` px (ints or integer tensors alike): each
    tile holds whole strides, as evenly shared as they go; the last also takes the side's remainder (< stride)."""
    units = size // stride
    start = index * units // count * stride
    end = (index + 1) * units // count * stride
    return start, end + (size - units * stride) * ((index + 1) // count)


# --- the configuration ---------------------------------------------------------------------------------------------

CONTENT_LAYERS = ("block5_conv2",)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")  # Gatys et al. 2015
SEED_STYLE_LAYERS = ("block1_conv1", "block3_conv1", "block5_conv1")  # the original write-up's three
OPTIMIZERS = ("lbfgs", "lbfgs-scipy", "adam")  # projected L-BFGS in TensorFlow, scipy's L-BFGS-B, the tutorial's Adam
INITS = ("content", "noise", "style")
PRESERVE_COLORS = ("luminance", "histogram")  # Gatys et al. 2016, "Controlling Perceptual Factors"
STYLE_STATISTICS = ("gram", "wasserstein")  # objective.STATISTICS: Gram matrices (Gatys), or Gaussians' W2 distance
# Gatys et al.'s network (channels normalised to mean activation 1, average pooling) and the weights measured for it
# (the layer-comparison and slider notebooks, 06 and 07): with alpha 1, beta/alpha from 1e-1 (mostly the photo) to
# 1e2 (mostly the painting) is the useful range at 128-384 px; 3 keeps both plain to see. No TV term, as in the paper.
NORMALIZED = {"normalize_vgg": True, "pooling": "avg", "alpha": 1.0, "beta": 3.0, "tv": 0.0}
GRID_RATIOS = (1e-1, 1.0, 10.0, 100.0)  # beta/alpha of the Fig. 3 grid and `nst sweep`: mostly content -> mostly style
RAW_GRID_RATIOS = (1e-7, 1e-6, 1e-5, 1e-4)  # the same for the raw VGG19 with the tutorial's weights
PREVIEW_RATIOS = tuple(sorted(GRID_RATIOS + (NORMALIZED["beta"] / NORMALIZED["alpha"],)))  # the sliders' presets


def check_blend(blend) -> tuple[float, ...]:
    """Return style blend weights as floats if they are finite, >= 0 and not all 0, else raise NSTError."""
    b = tuple(float(x) for x in blend)
    if not b or any(not math.isfinite(x) or x < 0 for x in b) or sum(b) == 0:
        raise NSTError(f"style blend weights must be finite, >= 0 and not all 0, got {b}")
    return b


def option(
    help: str,
    *,
    choices: Sequence[str] | None = None,
    kind: str | None = None,
    metavar: str | None = None,
    aliases: tuple[str, ...] = (),
    group: str | None = None,
    sweep: bool = True,
) -> dict:
    """Return a StyleConfig field's metadata for the `nst` option made from it (`cli.add_config_options`).

    The option is `--<field-name>` (plus `aliases`); its type comes from the field's annotation, refined by `kind`
    ("positive_int", "weight": a finite float >= 0, "positive_float"); `group` files it under a help heading;
    `sweep=False` keeps it off `nst sweep` (which varies it, or has no use for it). A field without metadata gets
    no option.
    """
    return {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "kind": kind,
        "metavar": metavar,
        "aliases": aliases,
        "group": group,
        "sweep": sweep,
    }


@dataclass(frozen=True)
class StyleConfig:
    """Everything that decides a stylization; the defaults are the TensorFlow tutorial's objective.

    Each field's metadata (`option`) makes its `nst stylize` / `nst sweep` option.
    """

    size: int = field(default=512, metadata=option("long side of the output in px", kind="positive_int"))
    steps: int = field(default=300, metadata=option("loss evaluations / optimiser steps", kind="positive_int"))
    optimizer: str = field(
        default="lbfgs",
        metadata=option(
            "lbfgs: projected L-BFGS in TensorFlow (on the GPU if there is one); lbfgs-scipy: scipy's L-BFGS-B on the "
            "host, the reference (not in sweeps); adam: the TensorFlow tutorial's",
            choices=OPTIMIZERS,
        ),
    )
    alpha: float = field(default=1e4, metadata=option("content weight", kind="weight"))
    beta: float = field(default=1e-2, metadata=option("style weight", kind="weight", sweep=False))
    tv: float = field(default=30.0, metadata=option("total variation weight", kind="weight"))
    content_layers: tuple[str, ...] = field(default=CONTENT_LAYERS, metadata=option("content layers", metavar="LAYER"))
    style_layers: tuple[str, ...] = field(default=STYLE_LAYERS, metadata=option("style layers", metavar="LAYER"))
    style_layer_weights: tuple[float, ...] | None = field(
        default=None,
        metadata=option("one weight per style layer (normalised)", kind="weight", metavar="W", sweep=False),
    )
    init: str = field(default="content", metadata=option("starting image", choices=INITS))
    seed: int | None = field(default=0, metadata=option("random seed"))
    pooling: str = field(default="max", metadata=option("VGG19 pooling", choices=POOLINGS))
    learning_rate: float = field(
        default=0.02, metadata=option("Adam learning rate", kind="weight", metavar="LR", aliases=("--lr",))
    )
    tol: float | None = field(
        default=None,
        metadata=option(
            "stop early when the objective falls by less than TOL (relative) over 20 evaluations (default: off)",
            metavar="TOL",
            sweep=False,
        ),
    )
    style_blend: tuple[float, ...] | None = field(
        default=None,
        metadata=option(
            "one blend weight per style image (normalised; default equal)",
            kind="weight",
            metavar="W",
            group="controls",
            sweep=False,
        ),
    )
    style_scale: float = field(
        default=1.0,
        metadata=option(  # style images' long side = style_scale * size
            "style images' long side relative to --size", kind="positive_float", group="controls"
        ),
    )
    style_layer_weight_exp: float | None = field(
        default=None,
        metadata=option(  # as anishathalye/neural-style
            "weigh style layer i by E**i (normalised); E > 1 favours deep layers",
            kind="positive_float",
            metavar="E",
            group="controls",
            sweep=False,
        ),
    )
    preserve_colors: str | None = field(
        default=None,
        metadata=option(
            "keep the content's colours: luminance-only transfer, or match the style's colour histogram "
            "(mean/covariance) to the content first",
            choices=PRESERVE_COLORS,
            group="controls",
        ),
    )
    scales: tuple[int, ...] = field(
        default=(),
        metadata=option(
            "coarse-to-fine: optimise first at these long sides in px (ascending, each below --size), --scale-steps "
            "L-BFGS evaluations each, then --steps at --size; a bolder look with larger strokes; none: single scale "
            "(default)",
            kind="scale",
            metavar="PX",
            group="controls",
            sweep=False,
        ),
    )
    scale_steps: int = field(
        default=50,
        metadata=option(
            "L-BFGS evaluations at each coarse scale of --scales", kind="positive_int", group="controls", sweep=False
        ),
    )
    precision: str = field(
        default="auto",
        metadata=option(
            "VGG19 convolutions in float32 or bfloat16; auto: bfloat16 where a probe shows it faster",
            choices=PRECISIONS,
        ),
    )
    normalize_vgg: bool = field(
        default=False,
        metadata=option(
            "Gatys et al.'s VGG19: every channel divided by its mean activation over the registry's six images "
            "(factors "
            "computed once and cached); also switches the defaults of --pooling, --alpha, --beta and --tv"
        ),
    )
    style_statistic: str = field(
        default="gram",
        metadata=option(
            "what the style term matches in each style layer: gram, Gatys et al.'s Gram matrices; wasserstein, the "
            "features as a Gaussian (mean and covariance) matched by the 2-Wasserstein distance, as crowsonkb's "
            "style-transfer-pytorch; its values scale differently: give it its own --beta (about 10 with the raw "
            "VGG19's default --alpha)",
            choices=STYLE_STATISTICS,
        ),
    )
    tile: int | None = field(
        default=None,
        metadata=option(
            "evaluate the loss in tiles of PX px (rounded down to the network's stride, 16 px up to block5), each "
            "read with the receptive field's halo: the same loss and gradient in one tile's memory, at the cost of "
            "a second forward pass and the halos; 0: never tile (default: untiled when the run fits in memory, else "
            "the largest tiles that fit, said in one line)",
            metavar="PX",
            sweep=False,
        ),
    )

    def __post_init__(self) -> None:
        """Validate every field, raising NSTError with one clear line."""
        for name in ("size", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise NSTError(f"{name} must be a positive integer, got {v!r}")
        if self.size < 16:
            raise NSTError(f"size {self.size} is too small: VGG19 needs at least 16 px on the long side")
        for name in ("alpha", "beta", "tv", "learning_rate"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise NSTError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.alpha == 0 and self.beta == 0:
            raise NSTError("alpha and beta are both 0: nothing to optimise")
        if self.learning_rate == 0:
            raise NSTError("learning_rate must be > 0")
        if self.tol is not None and (
            not isinstance(self.tol, (int, float))
            or isinstance(self.tol, bool)
            or not math.isfinite(self.tol)
            or self.tol < 0
        ):
            raise NSTError(f"tol must be a finite number >= 0 (or None: off), got {self.tol!r}")
        if self.optimizer not in OPTIMIZERS:
            raise NSTError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise NSTError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.style_statistic not in STYLE_STATISTICS:
            raise NSTError(
                f"unknown style_statistic {self.style_statistic!r}; choose one of {', '.join(STYLE_STATISTICS)}"
            )
        check_pooling(self.pooling)
        check_precision(self.precision)
        object.__setattr__(self, "content_layers", check_layers(tuple(self.content_layers)))
        object.__setattr__(self, "style_layers", check_layers(tuple(self.style_layers)))
        if self.style_layer_weights is not None:
            w = tuple(float(x) for x in self.style_layer_weights)
            if len(w) != len(self.style_layers):
                raise NSTError(f"{len(w)} style layer weights for {len(self.style_layers)} style layers")
            if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) == 0:
                raise NSTError(f"style layer weights must be finite, >= 0 and not all 0, got {w}")
            object.__setattr__(self, "style_layer_weights", w)
        self._check_controls()
        self._check_scales()
        if self.tile is not None and (not isinstance(self.tile, int) or isinstance(self.tile, bool) or self.tile < 0):
            raise NSTError(f"tile must be a whole number of px >= 0 (0: never tile), got {self.tile!r}")

    def _check_scales(self) -> None:
        """Validate the coarse-to-fine schedule: ascending long sides from 16 px up to below `size`."""
        sc = tuple(self.scales or ())
        if sc in ((None,), ("none",)):  # `--scales none`: single scale
            sc = ()
        if None in sc or "none" in sc:
            raise NSTError(f"scales: none means single scale and stands alone, got {self.scales!r}")
        if any(not isinstance(x, int) or isinstance(x, bool) for x in sc):
            raise NSTError(f"scales must be whole numbers of px, got {self.scales!r}")
        if sc and (list(sc) != sorted(set(sc)) or sc[0] < 16 or sc[-1] >= self.size):
            raise NSTError(f"scales must be ascending long sides from 16 px up to below size {self.size}, got {sc}")
        if not isinstance(self.scale_steps, int) or isinstance(self.scale_steps, bool) or self.scale_steps <= 0:
            raise NSTError(f"scale_steps must be a positive integer, got {self.scale_steps!r}")
        object.__setattr__(self, "scales", sc)

    def _check_controls(self) -> None:
        """Validate the control fields (blend, style scale, layer weight exponent, colour preservation)."""
        if self.style_blend is not None:
            object.__setattr__(self, "style_blend", check_blend(self.style_blend))
        if (
            not isinstance(self.style_scale, (int, float))
            or not math.isfinite(self.style_scale)
            or self.style_scale <= 0
        ):
            raise NSTError(f"style_scale must be a finite number > 0, got {self.style_scale!r}")
        if self.style_layer_weight_exp is not None:
            e = self.style_layer_weight_exp
            if not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
                raise NSTError(f"style_layer_weight_exp must be a finite number > 0, got {e!r}")
            if self.style_layer_weights is not None:
                raise NSTError("give either style_layer_weights or style_layer_weight_exp, not both")
        if self.preserve_colors is not None and self.preserve_colors not in PRESERVE_COLORS:
            raise NSTError(
                f"unknown preserve_colors {self.preserve_colors!r}; choose one of {', '.join(PRESERVE_COLORS)}"
            )

    def layer_weights(self) -> tuple[float, ...]:
        """Return the per-style-layer weights normalised to sum to 1 (equal by default, exp**i with an exponent)."""
        w = self.style_layer_weights or (1.0,) * len(self.style_layers)
        if self.style_layer_weight_exp is not None and self.style_layer_weights is None:
            w = tuple(float(self.style_layer_weight_exp) ** i for i in range(len(self.style_layers)))
        return tuple(x / sum(w) for x in w)

    @classmethod
    def normalized(cls, **changes) -> StyleConfig:
        """Return a config for Gatys et al.'s normalised VGG19, average pooling and the weights found for it."""
        return cls(**{**NORMALIZED, **changes})

    def replace(self, **changes) -> StyleConfig:
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as JSON-ready data."""
        return asdict(self)


def content_shape(image_hw: tuple[int, int], layer: str) -> tuple[int, int, int]:
    """Return (H, W, C) of VGG19's `layer` for an image of `image_hw` pixels (each 2x2 pooling floors the size)."""
    _, h, w, c = layer_shapes(*image_hw, layer)[-1]
    return h, w, c


def paper_alpha_over_beta(
    alpha: float, beta: float, image_hw: tuple[int, int], content_layer: str = CONTENT_LAYERS[0]
) -> float:
    """Return Gatys et al.'s alpha/beta for our (alpha, beta) at this image size.

    Ours: alpha * mean((F - P)^2) + beta * sum_l w_l mean((G_l - A_l)^2) with G = F^T F / M. The paper's content
    loss is 1/2 sum((F - P)^2) and its E_l = sum((F^T F - A)^2) / (4 N_l^2 M_l^2), so its alpha = 2 alpha / (N M)
    (N channels, M positions of the content layer) and its beta = 4 beta: alpha/beta = (alpha / beta) / (2 N M).
    """
    h, w, c = content_shape(image_hw, content_layer)
    return alpha / beta / (2.0 * c * h * w)


def network_defaults(normalize_vgg: bool) -> dict:
    """Return the network fields a run starts from: NORMALIZED, or StyleConfig's defaults (the tutorial's raw VGG19)."""
    fields = StyleConfig.__dataclass_fields__
    return dict(NORMALIZED) if normalize_vgg else {k: fields[k].default for k in NORMALIZED}


def as_config(config: StyleConfig | None = None, overrides: dict | None = None) -> StyleConfig:
    """Return `config` (default StyleConfig()) with `overrides` applied, or raise TypeError saying how to pass them: a
    config that is not a StyleConfig (a dict: `StyleConfig(**d)`) or a setting StyleConfig has no field for."""
    if config is None:
        config = StyleConfig()
    elif not isinstance(config, StyleConfig):
        fix = "StyleConfig(**d)" if isinstance(config, dict) else "StyleConfig(size=..., steps=..., ...)"
        raise TypeError(
            f"config must be a StyleConfig, got {type(config).__name__}; build one with {fix} "
            "(from nst_utils import StyleConfig), or pass the settings as keywords"
        )
    unknown = sorted(set(overrides or {}) - set(StyleConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(
            f"unknown setting(s) {', '.join(unknown)}; StyleConfig's fields are "
            f"{', '.join(StyleConfig.__dataclass_fields__)}"
        )
    return config.replace(**overrides) if overrides else config
