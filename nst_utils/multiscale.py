"""Coarse-to-fine starts: optimise at small sizes first, upsample, and hand the full-size run a better start.

Used by `stylize` when `config.scales` is non-empty (off by default: on the default objective it did not pay, see
README "Speed"). One Objective serves every coarse scale: its targets are recomputed once per scale into
shape-free variables, so the loss is traced once for all coarse scales, not once per scale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .config import StyleConfig
from .images import resize
from .objective import build_objective
from .optimizers import run_lbfgs
from .tracking import Tracker


def with_detail(coarse: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return `coarse` upsampled to `content`'s shape plus the content detail the coarse scale could not hold."""
    hw = content.shape[:2]
    low = resize(resize(content, coarse.shape[:2]), hw)
    return np.clip(resize(coarse, hw) + (content - low), 0.0, 1.0).astype(np.float32)


def coarse_to_fine(config: StyleConfig, content: np.ndarray, styles: Sequence[np.ndarray], x0: np.ndarray,
                   blend: Sequence[float] | None = None, weights: str | os.PathLike | None = None,
                   objective=None, history: list | None = None) -> np.ndarray:
    """Return a full-size start image after L-BFGS at each of `config.scales` (coarse to fine) from `x0`.

    Content and styles are shrunk by the same factor at each scale (the style's scale relative to the image is
    kept). `objective` may be passed in to reuse one across calls; `history` collects (scale, best loss) pairs.
    """
    x = x0
    for side in config.scales:
        factor = side / max(content.shape[:2])
        hw = tuple(max(16, round(d * factor)) for d in content.shape[:2])
        c = resize(content, hw)
        s = [resize(img, tuple(max(16, round(d * factor)) for d in img.shape[:2])) for img in styles]
        if objective is None:
            objective = build_objective(config.replace(size=side, scales=()), c, s, blend, weights)
        else:
            objective.set_content(c[None])
            objective.set_style([img[None] for img in s], blend)
        start = resize(np.clip(x, 0.0, 1.0), hw) if x.shape[:2] != hw else x
        if x is not x0:
            start = with_detail(x, c)
        tracker = Tracker(config.scale_steps, None, False, f"lbfgs {hw[1]}x{hw[0]}")  # the same L-BFGS as stylize
        run_lbfgs(objective, start.astype(np.float32), config.scale_steps, tracker)
        tracker.close()
        x = tracker.best_image if tracker.best_image is not None else start
        if history is not None:
            history.append((side, tracker.best_loss))
    coarse_to_fine.objective = objective  # for tests: the one coarse objective (its tracing count)
    return with_detail(x, content) if x is not x0 else x0
