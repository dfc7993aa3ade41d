"""Images: load any common format as RGB floats, resize, VGG preprocessing and its inverse, colour preservation."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import assets, host
from .config import NSTError

# VGG19 was trained on BGR images in 0..255 with these per-channel means subtracted.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
MAX_PIXELS = 120_000_000  # refuse rasters beyond this before decoding them (decompression bombs)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Return an 8-bit RGB version of any PIL image (alpha composited on white, 16-bit rescaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = max(float(a.max(initial=0)), 1.0) if a.max(initial=0) > 1 else 1.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def check_raster(path: str | os.PathLike, img: Image.Image) -> None:
    """Return None if decoding `img` (header read, raster not yet) is safe, else raise NSTError saying why not."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise NSTError(
            f"{path} is {w}x{h} = {w * h:,} pixels, over the {MAX_PIXELS:,} this tool decodes safely "
            f"(a huge image or a decompression bomb); downscale it first"
        )
    bands = max(len(img.getbands()), 3)
    sample = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
    need = w * h * (2 * bands * sample + (8 if sample > 1 else 0) + 6)  # raster, a converted copy, RGB result
    free = host.available_bytes()
    if need > free * host.SAFETY:
        raise NSTError(
            f"{path} ({w}x{h}) needs about {need / 2**30:.1f} GiB to decode but only {free / 2**30:.1f} GiB "
            f"is free; downscale it first or free memory"
        )


def load_image(path: str | os.PathLike, max_size: int | None = None) -> np.ndarray:
    """Return the image at `path` as float32 HxWx3 RGB in [0, 1], upright, long side at most `max_size`."""
    p = Path(path)
    if p.is_dir():
        raise NSTError(f"{p} is a directory, not an image file")
    if not p.exists():
        raise NSTError(f"image {p} does not exist")
    if p.is_file() and p.stat().st_size == 0:  # a FIFO's size reads 0 too: it is read like a file
        raise NSTError(f"image {p} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # Image.open only reads the header; we check the size ourselves below
            try:
                with Image.open(p) as img:
                    img.seek(0)  # first frame of animations
                    if max_size and img.format == "JPEG":
                        img.draft("RGB", (max_size, max_size))  # decode at reduced size, cheap for huge JPEGs
                    check_raster(p, img)  # before anything is decoded
                    img = ImageOps.exif_transpose(img)
                    img.load()
                    rgb = _to_rgb(img)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NSTError(f"{p} is too large to decode safely (over {MAX_PIXELS:,} pixels); downscale it first") from exc
    except UnidentifiedImageError as exc:
        raise NSTError(f"{p} is not an image Pillow can read (corrupt, or not an image at all)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise NSTError(
            f"{p} could not be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "the file is truncated or corrupt"
        ) from exc
    if max_size:
        rgb = resize_pil(rgb, max_size)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def fit_long_side(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Return (height, width) scaled so the long side is `size`, keeping the aspect ratio."""
    h, w = shape
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Return a PIL image resized (Lanczos) so its long side is `size`."""
    h, w = fit_long_side((img.height, img.width), size)
    return img.resize((w, h), Image.Resampling.LANCZOS) if (h, w) != (img.height, img.width) else img


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Return an HxWx3 float image resized to long side `size`, or to exactly (height, width)."""
    hw = fit_long_side(image.shape[:2], size) if isinstance(size, int) else tuple(size)
    if hw == image.shape[:2]:
        return image.astype(np.float32)
    chans = [
        Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
            hw[::-1], Image.Resampling.LANCZOS
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack([np.asarray(c) for c in chans], -1), 0.0, 1.0).astype(np.float32)


FLOAT_SLACK = 0.5  # floats may overshoot [0, 1] by this much (resampling ringing) and are clipped; beyond: refused


def array_image(source) -> np.ndarray:
    """Return an image array (NumPy or a tensor) as HxWx3 float32 RGB in [0, 1], or raise NSTError saying how to fix it.

    uint8 is read as 0-255 (what `np.asarray(PIL.Image.open(...))` gives) and uint16 as 0-65535; floats must already
    be in [0, 1] (values within FLOAT_SLACK outside are clipped; a 0-255 float image is refused: divide it by 255);
    other integer, boolean or complex types are refused. HxW and HxWx1 are grey (repeated into RGB), 1xHxWx3 a batch
    of one; anything else (RGBA, channels first) is refused, as are NaN and infinite values.
    """
    a = np.asarray(source)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        hint = (
            "; drop the alpha channel with image[..., :3]"
            if a.ndim == 3 and a.shape[-1] == 4
            else "; move the channels last with np.moveaxis(image, 0, -1)"
            if a.ndim == 3 and a.shape[0] == 3
            else ""
        )
        raise NSTError(f"an image array must be HxWx3 RGB (or HxW grey), got shape {a.shape}{hint}")
    if a.dtype == np.uint8 or a.dtype == np.uint16:
        return (a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)).astype(np.float32)
    if not np.issubdtype(a.dtype, np.floating):
        raise NSTError(
            f"an image array of dtype {a.dtype} is ambiguous; pass uint8 (0-255), uint16 (0-65535) or floats in [0, 1]"
        )
    img = a.astype(np.float32)
    if not np.isfinite(img).all():
        raise NSTError("an image array contains NaN or infinite values; pass RGB floats in [0, 1]")
    lo, hi = float(img.min(initial=0.0)), float(img.max(initial=0.0))
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        fix = "divide a 0-255 image by 255" if lo >= -FLOAT_SLACK and hi <= 255 + FLOAT_SLACK else "rescale it"
        raise NSTError(f"an image array of floats must be RGB in [0, 1], got values from {lo:.4g} to {hi:.4g}; {fix}")
    return np.clip(img, 0.0, 1.0)


def as_image(source, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Return an HxWx3 float32 image in [0, 1] from a path, registry name or array (NumPy or a tensor: `array_image`
    says which dtypes and shapes), resized if asked."""
    array = isinstance(source, np.ndarray) or hasattr(source, "numpy")  # a TensorFlow tensor, without importing TF
    if array:
        img = array_image(source)
    else:
        img = load_image(assets.image_path(source), max_size=size if isinstance(size, int) else None)
    if size is not None:
        img = resize(img, size)
    if min(img.shape[:2]) < 16:
        name = "" if array else f"{source} "  # tiny images are upscaled; thin ones refused
        raise NSTError(
            f"image {name}is {img.shape[1]}x{img.shape[0]} px after resizing: too thin for VGG19, which needs "
            f"at least 16 px per side; crop it to a less elongated shape or use a larger --size"
        )
    return img


def preprocess(image):
    """Return VGG19 input (BGR, 0..255, ImageNet mean removed) from RGB floats in [0, 1]; works on NumPy or TF."""
    return image[..., ::-1] * 255.0 - VGG_MEAN_BGR


def deprocess(x):
    """Return RGB floats in [0, 1] scale from VGG19 input; the exact inverse of `preprocess` (no clipping)."""
    return (x + VGG_MEAN_BGR)[..., ::-1] / 255.0


# --- colour preservation (Gatys et al. 2016, "Controlling Perceptual Factors") -----------------------------------

# NTSC YIQ: Y is luminance, I and Q carry the chroma.
RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=np.float64
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(image: np.ndarray) -> np.ndarray:
    """Return the HxWx3 YIQ version of an RGB image in [0, 1]."""
    return (np.asarray(image, np.float64) @ RGB_TO_YIQ.T).astype(np.float32)


def yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    """Return RGB (clipped to [0, 1]) from an HxWx3 YIQ image."""
    return np.clip(np.asarray(yiq, np.float64) @ YIQ_TO_RGB.T, 0.0, 1.0).astype(np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """Return the HxW luminance (Y of YIQ) of an RGB image."""
    return (np.asarray(image, np.float64) @ RGB_TO_YIQ[0]).astype(np.float32)


def gray(image: np.ndarray) -> np.ndarray:
    """Return the luminance of an RGB image repeated into three channels (what VGG19 sees in luminance mode)."""
    return np.repeat(np.clip(luminance(image), 0.0, 1.0)[..., None], 3, axis=-1)


def match_luminance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return the style's gray image with its luminance mean and standard deviation matched to the content's."""
    ys, yc = luminance(style), luminance(content)
    y = (ys - ys.mean()) * (yc.std() / max(float(ys.std()), 1e-6)) + yc.mean()
    return np.repeat(np.clip(y, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def transfer_luminance(styled: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return an RGB image with the luminance of `styled` and the chroma (I, Q) of `content`."""
    yiq = rgb_to_yiq(content)
    yiq[..., 0] = luminance(styled)
    return yiq_to_rgb(yiq)


def _colour_sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Return the symmetric square root (or inverse square root) of a covariance matrix."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-8)
    return (vecs * (vals ** (-0.5 if inverse else 0.5))) @ vecs.T


def colour_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (3,) mean and (3, 3) covariance of an RGB image's pixels."""
    px = np.asarray(image, np.float64).reshape(-1, 3)
    return px.mean(0), np.cov(px, rowvar=False)


def match_colour(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return `source` recoloured by x -> A(x - mu_s) + mu_t, A = cov_t^1/2 cov_s^-1/2, so that its colour mean and
    covariance match `target`'s."""
    mu_s, cov_s = colour_stats(source)
    mu_t, cov_t = colour_stats(target)
    a = _colour_sqrtm(cov_t) @ _colour_sqrtm(cov_s, inverse=True)
    px = (np.asarray(source, np.float64).reshape(-1, 3) - mu_s) @ a.T + mu_t
    return np.clip(px.reshape(source.shape), 0.0, 1.0).astype(np.float32)


def prepare_colours(
    mode: str | None, content: np.ndarray, styles: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return (content, styles) as the optimisation should see them for colour mode `mode` (None: unchanged)."""
    if mode is None:
        return content, styles
    if mode == "luminance":
        return gray(content), [match_luminance(s, content) for s in styles]
    if mode == "histogram":
        return content, [match_colour(s, content) for s in styles]
    raise ValueError(f"unknown colour mode {mode!r}")


def restore_colours(mode: str | None, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return the output image for colour mode `mode`: in luminance mode the content's chroma is put back."""
    return transfer_luminance(image, content) if mode == "luminance" else image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 array from floats in [0, 1] (clipped, rounded); raise NSTError if a value is NaN or
    infinite: such an image is never written or shown as a picture (NaN would come out black)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 4:
        a = a[0]
    if not np.isfinite(a).all():
        raise NSTError(
            f"the image has {int(np.size(a) - np.isfinite(a).sum())} NaN or infinite values and is not written as a "
            "picture; the run diverged: start again (a smaller --lr, other weights) or from an earlier checkpoint"
        )
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
