"""The inputs of one run after the user's controls: style scale, blend weights, colour preservation, style mask."""

from __future__ import annotations

import os
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
    """Return a mask (path, registry name or array, HxW grey or RGB) as HxW floats in [0, 1] resized to `shape`
    (white = 1)."""
    img = as_image(source)
    return resize(img, shape).mean(-1).astype(np.float32)


def _is_source(x) -> bool:
    """Return True if `x` can be an image: a path, a registry name, or an array (NumPy or a tensor)."""
    return isinstance(x, str | os.PathLike | np.ndarray) or hasattr(x, "numpy")


def check_arguments(*, content=None, style=None, callback=None, progress=True, save_every=None) -> None:
    """Return None if the API's arguments have the types a run needs, else raise TypeError (or NSTError for a value
    out of range) saying what to pass instead."""
    if content is not None and not _is_source(content):
        raise TypeError(
            f"content must be a path, a registry name or an HxWx3 array, got {type(content).__name__}; "
            "for a nested list use np.asarray(...)"
        )
    for i, s in enumerate(style if isinstance(style, list | tuple) else [] if style is None else [style]):
        if not _is_source(s):
            where = f"style[{i}]" if isinstance(style, list | tuple) else "style"
            raise TypeError(
                f"{where} must be a path, a registry name or an HxWx3 array, got {type(s).__name__}; "
                "give several styles as a list of those"
            )
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be a function callback(step, image, terms) (or None), got {type(callback).__name__}"
        )
    if not isinstance(progress, bool | np.bool_):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if save_every is not None:
        if not isinstance(save_every, int) or isinstance(save_every, bool):
            raise TypeError(
                f"save_every must be a whole number of steps (a Python int: int(n)) or None, got {save_every!r}"
            )
        if save_every <= 0:
            raise NSTError(f"save_every must be a positive integer, got {save_every!r}")


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
