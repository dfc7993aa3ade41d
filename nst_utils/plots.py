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

from .images import atomic_write, to_uint8  # noqa: E402

TERM_COLORS = {"content": "tab:blue", "style": "tab:red", "tv": "tab:green", "total": "black"}


def show_images(images: Sequence[np.ndarray], titles: Sequence[str], suptitle: str | None = None,
                height: float = 3.5) -> plt.Figure:
    """Return a figure with the images in one row, each titled, axes hidden."""
    ratios = [img.shape[-2] / img.shape[-3] for img in images]
    fig, axes = plt.subplots(1, len(images), figsize=(height * sum(ratios) + 0.2, height + 0.6),
                             gridspec_kw={"width_ratios": ratios}, squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        ax.imshow(to_uint8(img))
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontweight="bold", fontsize=13)
    fig.tight_layout()
    return fig


def plot_history(history: dict[str, Sequence[float]], title: str = "Loss terms per step", ax: plt.Axes | None = None,
                 label_prefix: str = "") -> plt.Figure:
    """Return a figure of each weighted loss term per step on a log scale."""
    fig, ax = (plt.subplots(figsize=(6, 3.8)) if ax is None else (ax.figure, ax))
    for term, values in history.items():
        if len(values) and max(values) > 0:
            ax.plot(np.arange(1, len(values) + 1), values, label=f"{label_prefix}{term}", color=TERM_COLORS.get(term),
                    lw=2 if term == "total" else 1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step (loss evaluation)")
    ax.set_ylabel("weighted loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def image_grid(images: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], col_labels: Sequence[str],
               title: str, xlabel: str | None = None, ylabel: str | None = None, cell: float = 2.0,
               fontsize: float = 12) -> plt.Figure:
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
    """Return `path` after saving the figure there (PNG) atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def compare_histories(histories: dict[str, dict[str, Sequence[float]]], term: str = "total",
                      title: str = "Optimisers on the same objective", ax: plt.Axes | None = None) -> plt.Figure:
    """Return a figure of one loss term per loss evaluation for several runs (e.g. L-BFGS vs Adam), log scale."""
    fig, ax = (plt.subplots(figsize=(6, 3.8)) if ax is None else (ax.figure, ax))
    for label, history in histories.items():
        values = history[term]
        ax.plot(np.arange(1, len(values) + 1), values, label=f"{label} (best {min(values):.3g})", lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("loss evaluations")
    ax.set_ylabel(f"{term} loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def sweep_grid(results: Sequence, ratios: Sequence[float], row_labels: Sequence[str], title: str,
               xlabel: str = "beta/alpha: more style to the right", ylabel: str | None = None,
               col_labels: Sequence[str] | None = None) -> plt.Figure:
    """Return the labelled grid of a row-major sweep's images: one column per beta/alpha ratio, one row per label."""
    n = len(ratios)
    grid = [[results[r * n + c].image for c in range(n)] for r in range(len(row_labels))]
    return image_grid(grid, row_labels, col_labels or [f"beta/alpha = {r:g}" for r in ratios], title=title,
                      xlabel=xlabel, ylabel=ylabel)


def cumulative_labels(layers: Sequence[str]) -> list[str]:
    """Return row labels for growing layer sets: the first layer, then '+ layer' for each added one."""
    return [layers[0]] + [f"+ {name}" for name in layers[1:]]


def titled_grid(images: Sequence[np.ndarray], titles: Sequence[str], title: str, per_row: int = 3, cell: float = 2.4,
                fontsize: float = 11) -> plt.Figure:
    """Return a figure of images in rows of `per_row`, each with its own title (any unused cells blank)."""
    rows = -(-len(images) // per_row)
    h, w = images[0].shape[-3:-1]
    fig, axes = plt.subplots(rows, per_row, figsize=(cell * per_row * w / h + 0.4, (cell + 0.5) * rows + 0.6),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles):
        ax.imshow(to_uint8(img))
        ax.set_title(t, fontsize=fontsize)
    fig.suptitle(title, fontweight="bold", fontsize=fontsize + 2)
    fig.tight_layout()
    return fig


def save_loss_plot(history: dict[str, list[float]], path: str | os.PathLike, title: str = "Loss terms per step") -> Path:
    """Return `path` after writing a plot of each weighted loss term per step there (PNG, atomically)."""
    fig = plot_history(history, title=title)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
