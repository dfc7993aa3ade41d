"""Optical flow between video frames (OpenCV's DIS), backward warping, and the occlusion and motion-boundary weights of
Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (2016, arXiv 1604.08610).

Conventions, everywhere in this module and its callers:

- A flow is an HxWx2 float32 array of (dx, dy) in pixels, defined on the pixel grid of its FIRST frame:
  `optical_flow(a, b)[y, x] = (dx, dy)` means a[y, x] ~ b[y + dy, x + dx] (OpenCV's `calc(I0, I1)` convention).
- For frame i and the frame before it, i-1: the FORWARD flow is optical_flow(frame[i-1], frame[i]) (Ruder's w) and
  the BACKWARD flow is optical_flow(frame[i], frame[i-1]) (Ruder's w^, on frame i's grid).
- `warp(image, backward)` resamples `image` (anything on frame i-1's grid, e.g. the previous stylised frame) into
  frame i's geometry: out[y, x] = image[y + dy, x + dx] with (dx, dy) = backward[y, x]. Always pass the BACKWARD flow.

OpenCV and imageio are an optional extra (`pip install 'nst-utils[video]'`): `import nst_utils` never imports this
module, and it imports OpenCV only when a function needs it (require_video), so a missing extra is one line.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import numpy as np

from .config import NSTError
from .images import luminance, to_uint8

VIDEO_EXTRA = "video needs OpenCV and imageio: pip install 'nst-utils[video]'"
PRESETS = ("ultrafast", "fast", "medium")  # OpenCV's DIS presets, fastest first

# Ruder et al. (2016), section 3.2, the forward-backward check: constants of the two inequalities (and of their code,
# consistencyChecker.cpp in manuelruder/artistic-videos)
DISOCCLUSION_RELATIVE, DISOCCLUSION_ABSOLUTE = 0.01, 0.5  # |w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002  # |grad u^|^2 + |grad v^|^2 > 0.01 |w^|^2 + 0.002
INTERPOLATIONS = {"linear": "INTER_LINEAR", "cubic": "INTER_CUBIC"}  # name -> OpenCV's remap flag
# How warp resamples a picture. Bicubic: each later frame starts from the previous result resampled once more, and
# bilinear resampling blurs a little at every frame (measured in book/speed.md, "Video"). The flows themselves are
# sampled bilinearly in the consistency check, as in Ruder et al.'s consistencyChecker.cpp.
WARP_INTERPOLATION = "cubic"


def require_video(module: str) -> ModuleType:
    """Return the optional video module `module` (cv2, imageio.v3, ...), imported; raise NSTError naming the extra to
    install if it is missing."""
    # A function-level import on purpose: OpenCV and imageio are an optional dependency (the `video` extra), and the
    # base install must import nst_utils and run `nst --help` without them.
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NSTError(f"{VIDEO_EXTRA} ({exc})") from None


@functools.cache
def _dis(preset: str):
    """Return OpenCV's DIS optical-flow object for `preset` (one per preset, made on first use)."""
    if preset not in PRESETS:
        raise NSTError(f"unknown optical-flow preset {preset!r}; use one of {', '.join(PRESETS)}")
    cv2 = require_video("cv2")
    return cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))


def grey(image: np.ndarray) -> np.ndarray:
    """Return the HxW uint8 luminance (Y of YIQ) of an HxWx3 RGB image in [0, 1]: what the flow is computed on."""
    a = np.asarray(image)
    return to_uint8(luminance(a) if a.ndim == 3 else a)


def _same_grid(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Return None if `a` and `b` have the same height and width; else raise NSTError naming `what`."""
    if a.shape[:2] != b.shape[:2]:
        raise NSTError(f"{what} must be the same size, got {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")


def optical_flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Return the dense flow (H, W, 2) float32 from frame `a` to frame `b` (RGB in [0, 1]) by OpenCV's DIS on grey
    uint8 images: flow[y, x] = (dx, dy) with a[y, x] ~ b[y + dy, x + dx]."""
    _same_grid(a, b, "the two frames of a flow")
    return _dis(preset).calc(grey(a), grey(b), None).astype(np.float32, copy=False)


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 (x, y) pixel coordinates of an HxW grid."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return xs.astype(np.float32), ys.astype(np.float32)


def _sample(image: np.ndarray, flow: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """Return `image` sampled at (x + dx, y + dy) by `interpolation` (a key of INTERPOLATIONS), edges replicated: the
    backward warp by `flow`."""
    cv2 = require_video("cv2")
    xs, ys = _grid(flow.shape)
    src = np.ascontiguousarray(image, dtype=np.float32)
    mode = getattr(cv2, INTERPOLATIONS[interpolation])
    return cv2.remap(src, xs + flow[..., 0], ys + flow[..., 1], interpolation=mode, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Return `image` (HxW or HxWxC float) warped backward by `flow`: out[y, x] = image[y + dy, x + dx] (bicubic,
    clipped to the image's own range, edges replicated), float32.

    To bring the previous frame's result into the current frame's geometry pass the BACKWARD flow,
    optical_flow(current, previous) (the first element of flow_for); where it points outside the previous frame the
    nearest edge pixel is used (consistency_weights gives such pixels weight 0). Bicubic (WARP_INTERPOLATION) can
    overshoot at an edge: the result is clipped to [min, max] of `image`, so a picture in [0, 1] stays in [0, 1].
    """
    _same_grid(image, flow, "the image and its flow")
    src = np.asarray(image, np.float32)
    out = _sample(src, flow, WARP_INTERPOLATION)
    return np.clip(out, src.min(), src.max(), out=out) if src.size else out


def _norm2(flow: np.ndarray) -> np.ndarray:
    """Return |flow|^2 per pixel (H, W)."""
    return flow[..., 0] * flow[..., 0] + flow[..., 1] * flow[..., 1]


def consistency_weights(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Return Ruder et al.'s per-pixel weights c (H, W) float32 in {0, 1} on the current frame's grid: 0 at a
    disocclusion, a motion boundary or where the backward flow leaves the previous frame; 1 elsewhere.

    Ruder, Dosovitskiy & Brox (2016, arXiv 1604.08610), section 3.2 ("Temporal consistency loss"): with w = (u, v)
    the forward flow (frame i-1 to i), w^ = (u^, v^) the backward flow (frame i to i-1) and w~(x, y) =
    w((x, y) + w^(x, y)) the forward flow warped to the second image, a pixel is disoccluded where

        |w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5

    and on a motion boundary where

        |grad u^|^2 + |grad v^|^2 > 0.01 |w^|^2 + 0.002;

    c = 0 there and 1 everywhere else. As in the authors' consistencyChecker.cpp, the gradient is the central
    difference (-1/2, 0, 1/2) and a pixel whose backward flow lands outside the previous frame (a strip that enters
    the picture) gets 0; their final Gaussian smoothing of c is left out, so c stays binary.
    """
    _same_grid(forward, backward, "the forward and backward flows")
    forward, backward = np.asarray(forward, np.float32), np.asarray(backward, np.float32)
    xs, ys = _grid(backward.shape)
    px, py = xs + backward[..., 0], ys + backward[..., 1]
    height, width = backward.shape[:2]
    inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
    w_tilde = _sample(forward, backward)
    disoccluded = (
        _norm2(w_tilde + backward)
        > DISOCCLUSION_RELATIVE * (_norm2(w_tilde) + _norm2(backward)) + DISOCCLUSION_ABSOLUTE
    )
    along_y, along_x = np.gradient(backward, axis=(0, 1))  # each (H, W, 2): d(u^, v^)/dy and d(u^, v^)/dx
    motion = _norm2(along_x) + _norm2(along_y)  # |grad u^|^2 + |grad v^|^2
    boundary = motion > BOUNDARY_RELATIVE * _norm2(backward) + BOUNDARY_ABSOLUTE
    return (inside & ~disoccluded & ~boundary).astype(np.float32)


def warping_error(prev_out: np.ndarray, cur_out: np.ndarray, backward_flow: np.ndarray, weights: np.ndarray) -> float:
    """Return the mean, over the pixels of weight 1 (a weighted mean for other weights), of the squared difference
    between `cur_out` and warp(prev_out, backward_flow), averaged over channels (NaN if every weight is 0).

    The temporal-consistency metric: 0 when the current output is exactly the previous one moved by the flow.
    """
    _same_grid(prev_out, cur_out, "the two outputs")
    diff = np.square(np.asarray(cur_out, np.float64) - warp(prev_out, backward_flow))
    per_pixel = diff.mean(axis=-1) if diff.ndim == 3 else diff
    c = np.asarray(weights, np.float64)
    total = c.sum()
    return float((c * per_pixel).sum() / total) if total > 0 else float("nan")


def flow_for(prev_frame: np.ndarray, frame: np.ndarray, preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """Return (backward flow, weights) for `frame` given `prev_frame`: optical_flow(frame, prev_frame) (pass it to
    warp) and consistency_weights from both flows, both on `frame`'s grid."""
    backward = optical_flow(frame, prev_frame, preset)
    forward = optical_flow(prev_frame, frame, preset)
    return backward, consistency_weights(forward, backward)
