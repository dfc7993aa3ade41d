"""The layer figures of notebook 06 and the README: the block1-vs-block5 pair and Gatys et al.'s Fig. 3 grid.

`python -m nst_utils.figures --size 384` (or `make figures`) writes both into docs/figures.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from . import assets, plots
from .config import GRID_RATIOS, STYLE_LAYERS, StyleConfig, short_name
from .explore import matched_style_weights
from .images import as_image
from .plots import plt  # pyplot after plots' backend guard
from .run import Result
from .sweep import cumulative_layer_weights, grid_settings, sweep

PAIR_LAYERS = ("block1_conv1", "block5_conv1")
PAIR_STRENGTH = 100.0  # each single-layer run starts with style term 100 (alpha = 1, content term 0)


def layer_pair(
    content, style, size: int, steps: int, strength: float = PAIR_STRENGTH, weights: str | os.PathLike | None = None
) -> tuple[plt.Figure, list[Result]]:
    """Return (figure, results) of style from block1_conv1 only vs block5_conv1 only, at matched starting strength."""
    c, s = as_image(content, size), as_image(style, size)
    betas = matched_style_weights(c, s, PAIR_LAYERS, strength, weights=weights)
    results = sweep(
        c,
        s,
        StyleConfig.normalized(size=size, steps=steps, style_layers=PAIR_LAYERS),
        [{"style_layer_weights": (1, 0), "beta": betas[0]}, {"style_layer_weights": (0, 1), "beta": betas[1]}],
        weights=weights,
    )
    fig = plots.show_images(
        [c, s, results[0].image, results[1].image],
        ["content", "style", "style from conv1_1 only", "style from conv5_1 only"],
        height=3.2,
        suptitle="conv1_1 carries colour and grain, conv5_1 larger strokes and shapes",
    )
    return fig, results


def fig3_grid(
    content,
    style,
    size: int,
    steps: int,
    ratios: Sequence[float] = GRID_RATIOS,
    weights: str | os.PathLike | None = None,
) -> tuple[plt.Figure, list[Result]]:
    """Return (figure, row-major results) of Fig. 3: rows conv1_1, +conv2_1 ... +conv5_1, columns beta/alpha."""
    config = StyleConfig.normalized(size=size, steps=steps)
    c = as_image(content, size)
    results = sweep(
        c,
        style,
        config,
        grid_settings(cumulative_layer_weights(len(STYLE_LAYERS)), ratios, config.alpha),
        weights=weights,
    )
    # No paper ratios on the columns: the paper's images at those ratios start from white noise and run to
    # convergence, these from the photo for `steps` evaluations (an exercise of the layer-comparison notebook
    # starts from noise).
    fig = plots.sweep_grid(
        results,
        ratios,
        plots.cumulative_labels([short_name(n) for n in STYLE_LAYERS]),
        title="Style from more layers (rows) and more style weight (columns)",
        xlabel="more style to the right (beta/alpha, this package's weights; from the photo)",
        col_labels=[f"beta/alpha = {r:g}" for r in ratios],
    )
    return fig, results


def main(argv: Sequence[str] | None = None) -> None:
    """Write docs/figures/07_block1_vs_block5.png and 07_gatys_fig3_grid.png at the given size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=384, help="long side of every image in px (default: %(default)s)")
    p.add_argument("--steps", type=int, default=80, help="L-BFGS evaluations per image (default: %(default)s)")
    p.add_argument("--content", default=assets.default_images()[0])
    p.add_argument("--style", default=assets.default_images()[1])
    p.add_argument("--out", default="docs/figures", help="folder (default: %(default)s)")
    p.add_argument("--only", choices=("pair", "grid"), help="write one of the two figures")
    a = p.parse_args(argv)
    out = Path(a.out)
    for name, make in (("pair", layer_pair), ("grid", fig3_grid)):
        if a.only in (None, name):
            fig, _ = make(a.content, a.style, a.size, a.steps)
            path = out / ("07_block1_vs_block5.png" if name == "pair" else "07_gatys_fig3_grid.png")
            plots.save_figure(fig, path)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
