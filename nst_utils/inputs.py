"""The inputs of one run after the user's controls: style scale, blend weights, colour preservation, style mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import assets
from .config import NSTError, StyleConfig, check_blend
from .images import as_image, prepare_colours, resize, restore_colours


@dataclass
class Inputs:
    """The arrays a run optimises against (content and styles as VGG19 sees them) and what its result needs."""

    content: np.ndarray
    styles: list[np.ndarray]
    blend: tuple[float, ...] | None = None
    mask: np.ndarray | None = None
    original: np.ndarray | None = None  # the content in colour; luminance mode puts its chroma back
    colour: str | None = None

    def result_image(self, image: np.ndarray) -> np.ndarray:
        """Return the image a user gets from an optimised one: with the content's chroma in luminance mode."""
        return restore_colours(self.colour, image, self.original if self.original is not None else self.content)


def style_size(config: StyleConfig) -> int:
    """Return the long side in px the style images are resized to: style_scale times the output size."""
    return max(1, round(config.size * config.style_scale))


def normalised_blend(blend, n_styles: int) -> tuple[float, ...] | None:
    """Return blend weights (one per style image) normalised to sum to 1, or None for an equal blend."""
    if blend is None:
        return None
    b = tuple(float(x) for x in blend)
    if len(b) != n_styles:
        raise NSTError(f"{len(b)} style blend weights for {n_styles} style images")
    b = check_blend(b)
    return tuple(x / sum(b) for x in b)


def load_mask(source, shape: tuple[int, int]) -> np.ndarray:
    """Return a mask (path, registry name or array) as HxW floats in [0, 1] resized to `shape` (white = 1)."""
    if isinstance(source, np.ndarray) and source.ndim == 2:
        source = np.repeat(source[..., None], 3, axis=-1)
    img = as_image(source)
    return resize(img, shape).mean(-1).astype(np.float32)


def prepare_inputs(config: StyleConfig, content=None, style=None, style_mask=None) -> Inputs:
    """Return the run's Inputs: images loaded at their sizes, blend checked, colours prepared, mask loaded."""
    default_content, default_style = assets.default_images()
    content_img = as_image(content if content is not None else default_content, config.size)
    styles = list(style) if isinstance(style, list | tuple) else [style if style is not None else default_style]
    if not styles:
        raise NSTError("no style image given")
    size = style_size(config)
    style_imgs = [as_image(s, size) for s in styles]
    blend = normalised_blend(config.style_blend, len(style_imgs))
    mask = None
    if style_mask is not None:
        if blend is not None and len(set(blend)) > 1:
            raise NSTError(
                "style blend weights do not apply with a style mask (the mask decides where each style goes)"
            )
        mask = load_mask(style_mask, content_img.shape[:2])
        if len(style_imgs) > 2:
            raise NSTError(f"a style mask takes one or two style images, got {len(style_imgs)}")
    c_in, s_in = prepare_colours(config.preserve_colors, content_img, style_imgs)
    return Inputs(
        content=c_in, styles=s_in, blend=blend, mask=mask, original=content_img, colour=config.preserve_colors
    )
