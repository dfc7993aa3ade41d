"""The objective of a run: an Objective with its content and style targets computed once, and the starting image."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .config import StyleConfig
from .images import resize
from .losses import Objective
from .model import get_extractor


def build_objective(config: StyleConfig, content: np.ndarray, styles: Sequence[np.ndarray],
                    blend: Sequence[float] | None = None, weights: str | os.PathLike | None = None) -> Objective:
    """Return an Objective for `config` with its content and style targets computed once."""
    extractor = get_extractor(config.content_layers + config.style_layers, config.pooling, weights, config.precision,
                              config.normalize_vgg)
    obj = Objective(extractor, config.content_layers, config.style_layers, alpha=config.alpha, beta=config.beta,
                    tv=config.tv, style_layer_weights=config.layer_weights())
    obj.set_content(content[None])
    obj.set_style([s[None] for s in styles], blend)
    return obj


def initial_image(config: StyleConfig, content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Return the starting image: the content, uniform noise (seeded), or the style resized to the content."""
    if config.init == "content":
        return content.copy()
    if config.init == "style":
        return resize(style, content.shape[:2])
    rng = np.random.default_rng(config.seed)
    return rng.uniform(0.0, 1.0, content.shape).astype(np.float32)
