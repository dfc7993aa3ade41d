"""The facts and the configuration: the one error type, VGG19's layer table, and the StyleConfig every front end
(CLI, notebooks, sliders) fills in, with its validation. No TensorFlow here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace


class NSTError(Exception):
    """A user-facing failure; the CLI prints its message as one line and exits non-zero."""


# --- VGG19's layer table -------------------------------------------------------------------------------------------

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


def layer_shapes(height: int, width: int, deepest: str = LAYERS[-1]) -> list[tuple[str, int, int, int]]:
    """Return (layer, H, W, C) of each VGG19 layer up to `deepest` for an HxW image (each 2x2 pooling floors)."""
    out, h, w = [], height, width
    for name in LAYERS[: depth(deepest) + 1]:
        if name.endswith("_pool"):
            h, w = h // 2, w // 2
        out.append((name, h, w, CHANNELS[name]))
    return out


# --- the configuration ---------------------------------------------------------------------------------------------

CONTENT_LAYERS = ("block5_conv2",)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")  # Gatys et al. 2015
SEED_STYLE_LAYERS = ("block1_conv1", "block3_conv1", "block5_conv1")  # the original write-up's three
OPTIMIZERS = ("lbfgs", "lbfgs-scipy", "adam")  # "lbfgs": projected L-BFGS in TensorFlow; "lbfgs-scipy": scipy's L-BFGS-B
INITS = ("content", "noise", "style")
PRESERVE_COLORS = ("luminance", "histogram")  # Gatys et al. 2016, "Controlling Perceptual Factors"
STYLE_STATISTICS = ("gram", "wasserstein")  # objective.STATISTICS: Gram matrices (Gatys), or Gaussians' W2 distance
# Gatys et al.'s network (channels normalised to mean activation 1, average pooling) and the weights measured for it
# (notebooks 06, 07): with alpha 1, beta/alpha from 1e-1 (mostly the photo) to 1e2 (mostly the painting) is the useful
# range at 128-384 px; 3 keeps both plain to see. No TV term, as in the paper.
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


@dataclass(frozen=True)
class StyleConfig:
    """Everything that decides a stylization; the defaults are the TensorFlow tutorial's objective."""

    size: int = 512
    steps: int = 300
    optimizer: str = "lbfgs"
    alpha: float = 1e4
    beta: float = 1e-2
    tv: float = 30.0
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    init: str = "content"
    seed: int | None = 0
    pooling: str = "max"
    learning_rate: float = 0.02
    tol: float | None = None  # stop when the objective falls by less than this (relative) over 20 evaluations; None: off
    style_blend: tuple[float, ...] | None = None  # one weight per style image, normalised; None: equal
    style_scale: float = 1.0  # style images' long side = style_scale * size
    style_layer_weight_exp: float | None = None  # layer i weighs exp**i (normalised), as anishathalye/neural-style
    preserve_colors: str | None = None  # None, "luminance" or "histogram"
    scales: tuple[int, ...] = ()  # coarse-to-fine: long sides optimised first (ascending, each < size); () is off
    scale_steps: int = 50  # L-BFGS evaluations at each coarse scale
    precision: str = "auto"  # VGG19 convolutions: "float32", "bfloat16", or "auto" (bfloat16 where it runs faster)
    normalize_vgg: bool = False  # Gatys et al.'s VGG19: every channel scaled to mean activation 1 (see NORMALIZED)
    style_statistic: str = "gram"  # what the style term matches per layer: one of STYLE_STATISTICS

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
        if self.tol is not None and (not isinstance(self.tol, (int, float)) or isinstance(self.tol, bool)
                                     or not math.isfinite(self.tol) or self.tol < 0):
            raise NSTError(f"tol must be a finite number >= 0 (or None: off), got {self.tol!r}")
        if self.optimizer not in OPTIMIZERS:
            raise NSTError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise NSTError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.style_statistic not in STYLE_STATISTICS:
            raise NSTError(f"unknown style_statistic {self.style_statistic!r}; choose one of {', '.join(STYLE_STATISTICS)}")
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

    def _check_scales(self) -> None:
        """Validate the coarse-to-fine schedule: ascending long sides from 16 px up to below `size`."""
        sc = tuple(self.scales or ())
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
        if not isinstance(self.style_scale, (int, float)) or not math.isfinite(self.style_scale) or self.style_scale <= 0:
            raise NSTError(f"style_scale must be a finite number > 0, got {self.style_scale!r}")
        if self.style_layer_weight_exp is not None:
            e = self.style_layer_weight_exp
            if not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
                raise NSTError(f"style_layer_weight_exp must be a finite number > 0, got {e!r}")
            if self.style_layer_weights is not None:
                raise NSTError("give either style_layer_weights or style_layer_weight_exp, not both")
        if self.preserve_colors is not None and self.preserve_colors not in PRESERVE_COLORS:
            raise NSTError(f"unknown preserve_colors {self.preserve_colors!r}; choose one of {', '.join(PRESERVE_COLORS)}")

    def layer_weights(self) -> tuple[float, ...]:
        """Return the per-style-layer weights normalised to sum to 1 (equal by default, exp**i with an exponent)."""
        w = self.style_layer_weights or (1.0,) * len(self.style_layers)
        if self.style_layer_weight_exp is not None and self.style_layer_weights is None:
            w = tuple(float(self.style_layer_weight_exp) ** i for i in range(len(self.style_layers)))
        return tuple(x / sum(w) for x in w)

    @classmethod
    def normalized(cls, **changes) -> "StyleConfig":
        """Return a config for Gatys et al.'s normalised VGG19 with average pooling and its measured weights (NORMALIZED)."""
        return cls(**{**NORMALIZED, **changes})

    def replace(self, **changes) -> "StyleConfig":
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as JSON-ready data."""
        return asdict(self)


def content_shape(image_hw: tuple[int, int], layer: str) -> tuple[int, int, int]:
    """Return (H, W, C) of VGG19's `layer` for an image of `image_hw` pixels (each 2x2 pooling floors the size)."""
    _, h, w, c = layer_shapes(*image_hw, layer)[-1]
    return h, w, c


def paper_alpha_over_beta(alpha: float, beta: float, image_hw: tuple[int, int], content_layer: str = CONTENT_LAYERS[0]) -> float:
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

