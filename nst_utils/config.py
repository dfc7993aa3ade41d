"""The one configuration object every front end (CLI, notebooks, sliders) fills in, and its validation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .errors import NSTError
from .model import POOLINGS, check_layers

CONTENT_LAYERS = ("block5_conv2",)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")  # Gatys et al. 2015
SEED_STYLE_LAYERS = ("block1_conv1", "block3_conv1", "block5_conv1")  # the original write-up's three
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")


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
        if self.optimizer not in OPTIMIZERS:
            raise NSTError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise NSTError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.pooling not in POOLINGS:
            raise NSTError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        object.__setattr__(self, "content_layers", check_layers(tuple(self.content_layers)))
        object.__setattr__(self, "style_layers", check_layers(tuple(self.style_layers)))
        if self.style_layer_weights is not None:
            w = tuple(float(x) for x in self.style_layer_weights)
            if len(w) != len(self.style_layers):
                raise NSTError(f"{len(w)} style layer weights for {len(self.style_layers)} style layers")
            if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) == 0:
                raise NSTError(f"style layer weights must be finite, >= 0 and not all 0, got {w}")
            object.__setattr__(self, "style_layer_weights", w)

    def layer_weights(self) -> tuple[float, ...]:
        """Return the per-style-layer weights normalised to sum to 1 (equal by default)."""
        w = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return tuple(x / sum(w) for x in w)

    def replace(self, **changes) -> "StyleConfig":
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as JSON-ready data."""
        d = asdict(self)
        d.pop("extra")
        return d
