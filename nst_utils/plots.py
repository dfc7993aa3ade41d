"""Figures: images side by side, loss curves, labelled grids; every figure titled and labelled."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and not os.environ.get("DISPLAY") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # headless scripts and tests; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .config import short_name  # noqa: E402
from .images import to_uint8  # noqa: E402
from .outputs import atomic_write, image_format, save_image  # noqa: E402

TERM_COLORS = {"content": "tab:blue", "style": "tab:red", "tv": "tab:green", "temporal": "tab:purple", "total": "black"}


def show_images(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    suptitle: str | None = None,
    height: float = 3.5,
    max_width: float | None = 14.0,
    interpolation: str | None = None,
) -> plt.Figure:
    """Return a figure with the images in rows of at most 3 (4 as 2x2), each titled, axes hidden, each row at most
    `max_width` inches wide (lower than `height` where needed): about 1400 px at 100 dpi, legible when shrunk.
    `interpolation="nearest"` draws each pixel as a sharp square (matplotlib's default smooths enlarged images)."""
    n = len(images)
    rows = -(-n // 3)
    cols = -(-n // rows)
    ratios = [img.shape[-2] / img.shape[-3] for img in images]
    col_ratios = [max(ratios[i] for i in range(c, n, cols)) for c in range(cols)]
    if max_width is not None:
        height = min(height, (max_width - 0.2) / sum(col_ratios))
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(height * sum(col_ratios) + 0.2, (height + 0.45) * rows + (0.35 if suptitle else 0.15)),
        gridspec_kw={"width_ratios": col_ratios},
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(to_uint8(img), interpolation=interpolation)
        ax.set_title(title, fontsize=12)
    if suptitle:
        fig.suptitle(suptitle, fontweight="bold", fontsize=13)
    fig.tight_layout()
    return fig


def plot_history(
    history: dict[str, Sequence[float]],
    title: str = "Loss terms per evaluation",
    ax: plt.Axes | None = None,
    label_prefix: str = "",
) -> plt.Figure:
    """Return a figure of each weighted loss term per step on a log scale (values <= 0, e.g. the content term at
    the photo, left out), the legend right of the axes."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8)) if ax is None else (ax.figure, ax)
    for term, values in history.items():
        if len(values) and max(values) > 0:
            v = np.asarray(values, np.float64)
            ax.plot(
                np.arange(1, len(v) + 1),
                np.where(v > 0, v, np.nan),
                label=f"{label_prefix}{term}",
                color=TERM_COLORS.get(term),
                lw=2 if term == "total" else 1.2,
            )
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel("weighted loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def image_grid(
    images: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cell: float = 2.0,
    fontsize: float = 12,
) -> plt.Figure:
    """Return a figure of images in rows and columns with row and column labels and a title.

    The defaults keep a 4-5 column grid about 13 inches wide, so that in a notebook (about 900 px) the
    labels stay about 12 px high.
    """
    rows, cols = len(images), len(images[0])
    h, w = images[0][0].shape[-3:-1]
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols * w / h + 1.0, cell * rows + 1.2), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(to_uint8(images[r][c]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=fontsize)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=fontsize)
    fig.suptitle(title, fontweight="bold", fontsize=fontsize + 2)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=fontsize)
    if ylabel:
        fig.supylabel(ylabel, fontsize=fontsize)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Return `path` after saving the figure there atomically, in its extension's image format (PNG when none)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if image_format(path) == "PNG":
        return atomic_write(path, lambda f: f.write(buf.getvalue()))
    return save_image(Image.open(buf), path)


def compare_histories(
    histories: dict[str, dict[str, Sequence[float]]],
    term: str = "total",
    title: str = "Optimisers on the same objective",
    ax: plt.Axes | None = None,
    legend_rows: bool = False,
) -> plt.Figure:
    """Return a figure of one loss term per loss evaluation for several runs (e.g. L-BFGS vs Adam), log scale, the
    legend below the axes, where it hides no curve (one entry per row with `legend_rows`, for long labels)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4)) if ax is None else (ax.figure, ax)
    for label, history in histories.items():
        values = history[term]
        ax.plot(np.arange(1, len(values) + 1), values, label=f"{label} (best {min(values):.3g})", lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel(f"{term} loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1 if legend_rows else 2)
    fig.tight_layout()
    return fig


def sweep_grid(
    results: Sequence,
    ratios: Sequence[float],
    row_labels: Sequence[str],
    title: str,
    xlabel: str = "beta/alpha: more style to the right",
    ylabel: str | None = None,
    col_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """Return the labelled grid of a row-major sweep's images: one column per beta/alpha ratio, one row per label."""
    n = len(ratios)
    grid = [[results[r * n + c].image for c in range(n)] for r in range(len(row_labels))]
    return image_grid(
        grid,
        row_labels,
        col_labels or [f"beta/alpha = {r:g}" for r in ratios],
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
    )


def cumulative_labels(layers: Sequence[str]) -> list[str]:
    """Return row labels for growing layer sets: the first layer, then '+ layer' for each added one."""
    return [layers[0]] + [f"+ {name}" for name in layers[1:]]


def titled_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    title: str,
    per_row: int = 3,
    cell: float = 2.4,
    fontsize: float = 11,
) -> plt.Figure:
    """Return a figure of images in rows of `per_row`, each with its own title (any unused cells blank)."""
    rows = -(-len(images) // per_row)
    h, w = images[0].shape[-3:-1]
    fig, axes = plt.subplots(
        rows, per_row, figsize=(cell * per_row * w / h + 0.4, (cell + 0.5) * rows + 0.6), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles):
        ax.imshow(to_uint8(img))
        ax.set_title(t, fontsize=fontsize)
    fig.suptitle(title, fontweight="bold", fontsize=fontsize + 2)
    fig.tight_layout()
    return fig


def save_loss_plot(
    history: dict[str, list[float]], path: str | os.PathLike, title: str = "Loss terms per step"
) -> Path:
    """Return `path` after writing a plot of each weighted loss term per step there atomically (PNG unless its
    extension says otherwise)."""
    fig = plot_history(history, title=title)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_feature_maps(
    maps: dict[str, np.ndarray],
    image: np.ndarray | None = None,
    title: str = "What each block sees: its most active feature maps",
) -> plt.Figure:
    """Return a grid figure: one row per layer (named on the left), one column per feature map (each scaled to its
    own range), the input image once at the top left."""
    layers = list(maps)
    n = max(m.shape[0] for m in maps.values())
    cols = n + (image is not None)
    fig, axes = plt.subplots(len(layers), cols, figsize=(2.0 * cols + 0.8, 1.45 * len(layers) + 0.9), squeeze=False)
    for r, name in enumerate(layers):
        if image is not None and r == 0:  # the input once, at the top: every row sees the same image
            axes[r][0].imshow(np.clip(image, 0, 1))
            axes[r][0].set_title("input", fontsize=9)
        elif image is not None:
            axes[r][0].set_frame_on(False)
        for c in range(n):
            ax = axes[r][c + (image is not None)]
            m = maps[name][c]
            ax.imshow(m, cmap="viridis")
            ax.set_title(f"{m.shape[1]}x{m.shape[0]}, max {m.max():.3g}", fontsize=8)
        axes[r][0].set_ylabel(short_name(name), fontsize=10)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontweight="bold")
    fig.supxlabel("feature maps (channels with the largest mean activation; brighter = stronger)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gram_magnitudes(magnitudes: dict[str, dict[str, dict[str, float]]], title: str) -> plt.Figure:
    """Return two log-scale panels (mean |Gram| and style loss per layer), one line per network in `magnitudes`."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, key, label, ylabel in zip(
        axes,
        ("gram", "style loss"),
        ("the painting's Grams", "style loss, photo vs painting (what beta multiplies)"),
        ("mean |Gram entry| (log scale)", "style loss (log scale)"),
    ):
        for (network, mags), marker in zip(magnitudes.items(), "osd^"):
            names = list(mags)
            ax.plot(range(len(names)), [mags[n][key] for n in names], marker=marker, label=network)
        ax.set_xticks(range(len(names)), [short_name(n) for n in names], fontsize=11)
        ax.set_yscale("log")
        ax.set_title(label, fontsize=12)
        ax.set_xlabel("style layer")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=10)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def plot_gram(gram: np.ndarray, title: str, channels: int | None = 32, ax: plt.Axes | None = None) -> plt.Figure:
    """Return a heatmap figure of a (C, C) Gram matrix (its first `channels` channels if given)."""
    g = np.asarray(gram)
    g = g[0] if g.ndim == 3 else g
    if channels:
        g = g[:channels, :channels]
    fig, ax = plt.subplots(figsize=(5.2, 4.4)) if ax is None else (ax.figure, ax)
    im = ax.imshow(g, cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="mean product of the two channels")
    ax.set_title(title)
    ax.set_xlabel("channel j")
    ax.set_ylabel("channel i")
    return fig


def plot_reconstruction_losses(recs: Sequence, title: str) -> plt.Figure:
    """Return a figure of each reconstruction's loss per step, as a fraction of its starting loss (log scale); each
    curve has its own marker and line style, so that curves lying on each other stay visible."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    styles = ["-", "--", "-.", ":", (0, (5, 1))]
    for i, r in enumerate(recs):
        h = np.asarray(r.history)
        x = np.arange(1, len(h) + 1)
        every = max(1, len(h) // 8)
        ax.plot(
            x,
            h / h[0],
            label=r.label,
            ls=styles[i % len(styles)],
            marker="osD^v"[i % 5],
            markevery=(i % every, every),
            ms=5,
        )
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluation")
    ax.set_ylabel("loss / loss at evaluation 1")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_layer_shapes(rows: Sequence[dict], title: str = "VGG19: spatial size shrinks, channels grow") -> plt.Figure:
    """Return a figure of each layer's positions (H*W) and channels, from `layer_table` rows."""
    names = [r["paper name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar(x - 0.2, [r["positions H*W"] for r in rows], 0.4, color="tab:blue", label="positions H*W")
    ax.bar(x + 0.2, [r["output (H, W, C)"][2] for r in rows], 0.4, color="tab:orange", label="channels C")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer (input side on the left)")
    ax.set_ylabel("count (log scale)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    return fig


def plot_channel_histograms(
    image: np.ndarray, x: np.ndarray, title: str = "Pixel values before and after preprocessing"
) -> plt.Figure:
    """Return a two-panel figure: RGB values (0..255) of the image, and BGR values of the VGG input (mean removed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    bins = np.linspace(-130, 260, 80)
    for i, (n, c) in enumerate(zip("RGB", ("tab:red", "tab:green", "tab:blue"))):
        axes[0].hist(image[..., i].ravel() * 255.0, bins=bins, color=c, alpha=0.5, label=n)
    for i, (n, c) in enumerate(zip("BGR", ("tab:blue", "tab:green", "tab:red"))):
        axes[1].hist(x[..., i].ravel(), bins=bins, color=c, alpha=0.5, label=f"{n} - mean")
    axes[0].set_title("image: RGB, 0..255")
    axes[1].set_title("VGG input: BGR, ImageNet mean removed")
    for ax in axes:
        ax.set_xlabel("value")
        ax.legend()
    axes[0].set_ylabel("number of pixels")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def plot_loss_table(rows: Sequence[dict], title: str = "Which changes each loss notices") -> plt.Figure:
    """Return a figure with one bar panel per loss column of `loss_table` rows (log scale)."""
    terms = ("content loss", "style loss", "total variation")
    fig, axes = plt.subplots(1, len(terms), figsize=(12, 3.8))
    names = [r["image"] for r in rows]
    for ax, term in zip(axes, terms):
        vals = [r[term] for r in rows]
        tiny = 1e-9 * max(max(vals), 1e-30)  # float rounding of an exact zero
        positive = [v for v in vals if v > tiny] or [1.0]
        floor = min(positive) / 30  # zero bars are drawn down to here and labelled "0"
        bars = ax.bar(
            range(len(rows)),
            [max(v, floor) for v in vals],
            bottom=0,
            color=["tab:gray", "tab:blue", "tab:orange", "tab:purple", "tab:green"][: len(rows)],
        )
        ax.bar_label(bars, [f"{v:.2g}" if v > tiny else "0" for v in vals], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(floor, max(positive) * 10)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(term)
        ax.set_xlabel("image compared with the reference")
        ax.set_ylabel(f"{term} (log scale)")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def plot_grams(grams: dict[str, np.ndarray], title: str, channels: int | None = 32) -> plt.Figure:
    """Return a figure with one Gram-matrix heatmap per entry, side by side, each titled by its key."""
    fig, axes = plt.subplots(1, len(grams), figsize=(5.4 * len(grams), 4.6), squeeze=False)
    for ax, (name, g) in zip(axes[0], grams.items()):
        plot_gram(g, name, channels, ax=ax)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def plot_reconstructions(
    original: np.ndarray, recs: Sequence, title: str, xlabel: str, cols: int = 3, cell: float = 3.2
) -> plt.Figure:
    """Return a grid figure: the original first, then each reconstruction titled by its layer(s)."""
    images = [original] + [r.image for r in recs]
    titles = ["original"] + [r.label for r in recs]
    rows = -(-len(images) // cols)
    h, w = original.shape[:2]
    pw = cell * 1.4 if w >= h else cell * w / h  # panel width, inches: landscape panels wider
    ph = pw * h / w
    fig, axes = plt.subplots(rows, cols, figsize=(pw * cols + 0.3, (ph + 0.45) * rows + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(t, fontsize=10)
    fig.suptitle(title, fontweight="bold")
    fig.supxlabel(xlabel, fontsize=10)
    fig.tight_layout()
    return fig
