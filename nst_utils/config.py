"""The one configuration object every front end (CLI, notebooks, sliders) fills in, and its validation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .errors import NSTError
from .model import POOLINGS, PRECISIONS, check_layers

CONTENT_LAYERS = ("block5_conv2",)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")  # Gatys et al. 2015
SEED_STYLE_LAYERS = ("block1_conv1", "block3_conv1", "block5_conv1")  # the original write-up's three
OPTIMIZERS = ("lbfgs", "lbfgs-scipy", "adam")  # "lbfgs": projected L-BFGS in TensorFlow; "lbfgs-scipy": scipy's L-BFGS-B
INITS = ("content", "noise", "style")
PRESERVE_COLORS = ("luminance", "histogram")  # Gatys et al. 2016, "Controlling Perceptual Factors"


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
    extra: dict = field(default_factory=dict, compare=False)

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
        if self.pooling not in POOLINGS:
            raise NSTError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.precision not in PRECISIONS:
            raise NSTError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
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
            b = tuple(float(x) for x in self.style_blend)
            if not b or any(not math.isfinite(x) or x < 0 for x in b) or sum(b) == 0:
                raise NSTError(f"style blend weights must be finite, >= 0 and not all 0, got {b}")
            object.__setattr__(self, "style_blend", b)
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

    def replace(self, **changes) -> "StyleConfig":
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as JSON-ready data."""
        d = asdict(self)
        d.pop("extra")
        return d
