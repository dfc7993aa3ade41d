"""Look inside the method: VGG19's layers, its feature maps, reconstructions from one layer, and the loss terms.

This module computes; plots.py draws what it returns (the plot_* functions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .assets import weight_sources  # noqa: F401 - notebook 01 lists them from here
from .config import LAYERS, short_name
from .images import deprocess, preprocess, resize
from .model import get_extractor
from .objective import content_loss, gram_matrix, style_loss, total_variation
from .run import Result, stylize

# Gatys et al.'s Figure 1: content reconstructed from one layer per block, style from a growing set of layers.
CONTENT_RECONSTRUCTION_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2")
STYLE_RECONSTRUCTION_SETS = tuple(tuple(f"block{b}_conv1" for b in range(1, last + 1)) for last in range(1, 6))


# --- notebook 01: the weights and the architecture ---------------------------------------------------------


def layer_table(image: np.ndarray, weights: str | os.PathLike | None = None) -> list[dict]:
    """Return one row per VGG19 layer (name, kind, output shape at this image's size, values, parameters)."""
    ext = get_extractor(LAYERS, "max", weights, "float32")  # the cached unnormalised VGG19, all layers
    outputs, model = ext(np.asarray(image, np.float32)[None]), ext.model
    rows = []
    for name in LAYERS:
        _, h, w, c = outputs[name].shape
        layer = model.get_layer(name)
        rows.append(
            {
                "layer": name,
                "paper name": short_name(name),
                "kind": "conv 3x3 + ReLU" if "conv" in name else "max pool 2x2",
                "output (H, W, C)": (int(h), int(w), int(c)),
                "positions H*W": int(h * w),
                "values": int(h * w * c),
                "parameters": int(layer.count_params()),
            }
        )
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Return the rows as a Markdown table (display it with IPython.display.Markdown)."""
    columns = list(columns or rows[0].keys())

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# --- notebook 02: what VGG19 expects ---------------------------------------------------------------------


def round_trip(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (VGG input, image restored from it, max abs difference to the original) for an RGB image in [0, 1]."""
    x = preprocess(np.asarray(image, np.float32))
    back = deprocess(x)
    return x, back, float(np.max(np.abs(back - image)))


def channel_stats(x: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Return one row per channel of an HxWx3 array: its name, min, mean and max."""
    return [
        {"channel": n, "min": float(x[..., i].min()), "mean": float(x[..., i].mean()), "max": float(x[..., i].max())}
        for i, n in enumerate(names)
    ]


def vgg_input_view(x: np.ndarray) -> np.ndarray:
    """Return VGG input (BGR, mean removed) as a displayable image: channels kept in BGR order, min-max scaled."""
    x = np.asarray(x, np.float32)
    return (x - x.min()) / max(float(x.max() - x.min()), 1e-8)


# --- notebook 05: what layers see --------------------------------------------------------------------------


def feature_maps(
    image: np.ndarray, layers: Sequence[str], n: int = 4, weights: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Return {layer: (n, H, W) maps} of the n channels with the largest mean activation on this image."""
    feats = get_extractor(layers, "max", weights)(np.asarray(image, np.float32)[None])
    out = {}
    for name in layers:
        f = feats[name][0].numpy()
        top = np.argsort(f.mean(axis=(0, 1)))[::-1][:n]
        out[name] = np.moveaxis(f[..., top], -1, 0)
    return out


def noise_image(shape: tuple[int, ...], amplitude: float = 1.0, seed: int = 0) -> np.ndarray:
    """Return white noise around mid-grey, uniform in 0.5 +- amplitude/2 (amplitude 1: the same as init="noise")."""
    u = np.random.default_rng(seed).uniform(0.0, 1.0, shape)
    return np.clip(0.5 + (u - 0.5) * amplitude, 0.0, 1.0).astype(np.float32)


@dataclass
class Reconstruction:
    """An image rebuilt from white noise so that it matches one or more layers of a target image."""

    label: str
    layers: tuple[str, ...]
    image: np.ndarray
    history: list[float]

    @property
    def ratio(self) -> float:
        """Return the final loss as a fraction of the starting loss."""
        return self.history[-1] / self.history[0] if self.history and self.history[0] else float("nan")

    def summary(self) -> str:
        """Return one line: label, loss at the start and the best loss reached."""
        return (
            f"{self.label:>32}: loss {self.history[0]:.3e} -> {min(self.history):.3e} "
            f"({100 * min(self.history) / self.history[0]:.2f}% of start, {len(self.history)} evaluations)"
        )


def _reconstruct(
    target: np.ndarray,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    alpha: float,
    beta: float,
    *,
    steps: int,
    noise: float,
    seed: int,
    pooling: str,
    weights: str | os.PathLike | None,
) -> Result:
    """Return the Result of optimising white noise against `target` with only alpha * content + beta * style."""
    return stylize(
        target,
        target,
        size=max(target.shape[:2]),
        steps=steps,
        alpha=alpha,
        beta=beta,
        tv=0.0,
        content_layers=tuple(content_layers),
        style_layers=tuple(style_layers),
        init="noise",
        seed=seed,
        pooling=pooling,
        progress=False,
        weights=weights,
        init_image=noise_image(target.shape, noise, seed),
    )


def reconstruct_content(
    image: np.ndarray,
    layers: Sequence[str] = CONTENT_RECONSTRUCTION_LAYERS,
    *,
    size: int = 128,
    steps: int = 50,
    noise: float = 0.2,
    seed: int = 0,
    pooling: str = "max",
    weights: str | os.PathLike | None = None,
) -> list[Reconstruction]:
    """Return one Reconstruction per layer: white noise optimised to match only that layer's feature maps."""
    target = resize(np.asarray(image, np.float32), size)
    opts = dict(steps=steps, noise=noise, seed=seed, pooling=pooling, weights=weights)
    out = []
    for layer in layers:
        r = _reconstruct(target, (layer,), (layer,), 1.0, 0.0, **opts)
        out.append(Reconstruction(short_name(layer), (layer,), r.image, r.history["content"]))
    return out


def reconstruct_style(
    image: np.ndarray,
    layer_sets: Sequence[Sequence[str]] = STYLE_RECONSTRUCTION_SETS,
    *,
    size: int = 128,
    steps: int = 50,
    noise: float = 1.0,
    seed: int = 0,
    pooling: str = "max",
    weights: str | os.PathLike | None = None,
) -> list[Reconstruction]:
    """Return one Reconstruction per layer set: white noise optimised to match only those layers' Gram matrices."""
    target = resize(np.asarray(image, np.float32), size)
    opts = dict(steps=steps, noise=noise, seed=seed, pooling=pooling, weights=weights)
    out = []
    for layers in layer_sets:
        layers = tuple(layers)
        r = _reconstruct(target, (layers[-1],), layers, 0.0, 1.0, **opts)
        label = (
            " + ".join(short_name(n) for n in layers)
            if len(layers) <= 2
            else f"{short_name(layers[0])} ... {short_name(layers[-1])}"
        )
        out.append(Reconstruction(label, layers, r.image, r.history["style"]))
    return out


# --- notebook 03: the loss terms ---------------------------------------------------------------------------


def layer_features(image: np.ndarray, layer: str, weights: str | os.PathLike | None = None) -> np.ndarray:
    """Return the (1, H, W, C) activations of one VGG19 layer for an RGB image in [0, 1]."""
    return get_extractor((layer,), "max", weights)(np.asarray(image, np.float32)[None])[layer].numpy()


def shuffle_positions(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Return (1, H, W, C) features with their H*W spatial positions randomly permuted (channels kept together)."""
    _, h, w, c = features.shape
    flat = features.reshape(-1, c)
    return flat[np.random.default_rng(seed).permutation(h * w)].reshape(features.shape)


def loss_table(
    reference: np.ndarray,
    candidates: dict[str, np.ndarray],
    content_layer: str = "block5_conv2",
    style_layers: Sequence[str] = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"),
    weights: str | os.PathLike | None = None,
) -> list[dict]:
    """Return one row per candidate image: unweighted content, style (mean over layers) and TV against the reference."""
    ext = get_extractor((content_layer, *style_layers), "max", weights)
    ref = ext(np.asarray(reference, np.float32)[None])
    rows = []
    for name, img in candidates.items():
        f = ext(np.asarray(img, np.float32)[None])
        s = np.mean([float(style_loss(gram_matrix(f[n]), gram_matrix(ref[n]))[0]) for n in style_layers])
        rows.append(
            {
                "image": name,
                "content loss": float(content_loss(f[content_layer], ref[content_layer])[0]),
                "style loss": float(s),
                "total variation": float(total_variation(np.asarray(img, np.float32)[None])[0]),
            }
        )
    return rows


# --- notebook 06: why the raw network's layers are unequal ---------------------------------------------------


def gram_magnitudes(
    content: np.ndarray,
    style: np.ndarray,
    layers: Sequence[str],
    pooling: str = "max",
    normalize: bool = False,
    weights: str | os.PathLike | None = None,
) -> dict[str, dict[str, float]]:
    """Return {layer: {"gram": mean |Gram entry| of the style image, "style loss": unweighted, content vs style}}."""
    ext = get_extractor(layers, pooling, weights, "float32", normalize)
    fc, fs = (ext(np.asarray(x, np.float32)[None]) for x in (content, style))
    return {
        n: {
            "gram": float(tf.reduce_mean(tf.abs(gram_matrix(fs[n])))),
            "style loss": float(style_loss(gram_matrix(fc[n]), gram_matrix(fs[n]))[0]),
        }
        for n in layers
    }


def grid_distances(images: Sequence[np.ndarray], reference: np.ndarray, cols: int) -> np.ndarray:
    """Return the (rows, cols) mean absolute pixel difference of a row-major grid of images from `reference`."""
    d = [float(np.abs(np.asarray(img, np.float32) - reference).mean()) for img in images]
    return np.asarray(d).reshape(-1, cols)


def matched_style_weights(
    content: np.ndarray,
    style: np.ndarray,
    layers: Sequence[str],
    strength: float,
    pooling: str = "avg",
    normalize: bool = True,
    weights: str | os.PathLike | None = None,
) -> list[float]:
    """Return one beta per layer so that each single-layer run starts with the same style term, `strength`.

    At the content image (the start) beta_l * style_loss_l = strength: the runs begin equally far from their style
    targets, whatever the layer's scale.
    """
    mags = gram_magnitudes(content, style, layers, pooling, normalize, weights)
    return [strength / mags[n]["style loss"] for n in layers]


def layer_roles(
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    seed_style_layers: Sequence[str] | None = None,
    paper_content_layers: Sequence[str] | None = None,
) -> list[dict]:
    """Return one row per conv layer saying whether it is a content layer, a style layer (and, when given, a seed
    style layer and a content layer of Gatys et al., in a "content (Gatys)" column after "content")."""
    mark = lambda name, group: "yes" if name in group else ""  # noqa: E731
    rows = [
        {
            "layer": n,
            "paper name": short_name(n),
            "content": mark(n, content_layers),
            **({} if paper_content_layers is None else {"content (Gatys)": mark(n, paper_content_layers)}),
            "style (Gatys)": mark(n, style_layers),
        }
        for n in LAYERS
        if "conv" in n
    ]
    if seed_style_layers is not None:
        for row in rows:
            row["style (original write-up)"] = mark(row["layer"], seed_style_layers)
    return rows
