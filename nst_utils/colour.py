"""Colour preservation (Gatys et al. 2016, "Controlling Perceptual Factors"): luminance-only transfer and colour matching."""

from __future__ import annotations

import numpy as np

# NTSC YIQ: Y is luminance, I and Q carry the chroma.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]], dtype=np.float64)
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


def _sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Return the symmetric square root (or inverse square root) of a covariance matrix."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-8)
    return (vecs * (vals ** (-0.5 if inverse else 0.5))) @ vecs.T


def colour_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (3,) mean and (3, 3) covariance of an RGB image's pixels."""
    px = np.asarray(image, np.float64).reshape(-1, 3)
    return px.mean(0), np.cov(px, rowvar=False)


def match_colour(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return `source` recoloured by x -> A(x - mu_s) + mu_t, A = cov_t^1/2 cov_s^-1/2, so its colour mean and covariance match `target`'s."""
    mu_s, cov_s = colour_stats(source)
    mu_t, cov_t = colour_stats(target)
    a = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True)
    px = (np.asarray(source, np.float64).reshape(-1, 3) - mu_s) @ a.T + mu_t
    return np.clip(px.reshape(source.shape), 0.0, 1.0).astype(np.float32)


def prepare(mode: str | None, content: np.ndarray, styles: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return (content, styles) as the optimisation should see them for colour mode `mode` (None: unchanged)."""
    if mode is None:
        return content, styles
    if mode == "luminance":
        return gray(content), [match_luminance(s, content) for s in styles]
    if mode == "histogram":
        return content, [match_colour(s, content) for s in styles]
    raise ValueError(f"unknown colour mode {mode!r}")


def finish(mode: str | None, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return the output image for colour mode `mode`: in luminance mode the content's chroma is put back."""
    return transfer_luminance(image, content) if mode == "luminance" else image
