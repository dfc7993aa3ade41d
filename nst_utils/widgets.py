"""Sliders for alpha, beta and the TV weight driving a live preview (notebook 06).

The logic lives in `PreviewEngine`, plain Python that tests call without a browser:

1. `precompute()` runs one batched `sweep()` over a coarse, log-spaced set of beta/alpha
   ratios at preview size, so every slider position has a nearby finished image.
2. `update(alpha, beta, tv)` shows the precomputed image nearest in log(beta/alpha) at once
   (a visible change within a fraction of a second of releasing a slider), then refines
   it with a few warm-started L-BFGS evaluations on one persistent Objective whose weights
   are changed in place: moving a slider never retraces the tf.function.
3. `scale_check(k)` shows that only the ratio matters: alpha and beta multiplied by k give
   (almost) the same image; the small difference is the TV term, which was not scaled.

`SliderPanel` wraps the engine in ipywidgets (FloatLogSliders with continuous_update=False,
an Image preview, a ratio read-out and two buttons that scale alpha and beta together).
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import data
from .config import StyleConfig
from .images import to_uint8
from .optimize import _Tracker, as_image, build_objective, run_lbfgs
from .sweep import ratio_settings, sweep

DEFAULT_RATIOS = tuple(10.0 ** e for e in range(-9, -1))  # beta/alpha, 1e-9 ... 1e-2


def png_bytes(image: np.ndarray) -> bytes:
    """Return an HxWx3 image in [0, 1] encoded as PNG bytes (for ipywidgets.Image)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def nearest_index(ratios: Sequence[float], ratio: float) -> int:
    """Return the index of the ratio nearest to `ratio` on a log scale."""
    logs = np.log10(np.asarray(ratios, np.float64))
    return int(np.argmin(np.abs(logs - math.log10(max(ratio, 1e-30)))))


def format_ratio(alpha: float, beta: float, tv: float) -> str:
    """Return the read-out shown under the sliders."""
    return f"alpha = {alpha:.3g}   beta = {beta:.3g}   TV = {tv:.3g}   ->   beta/alpha = {beta / alpha:.3g}"


class PreviewEngine:
    """Preview-size stylization that follows the sliders: nearest precomputed image, then refined."""

    def __init__(self, content=None, style=None, config: StyleConfig | None = None, *, size: int = 128,
                 ratios: Sequence[float] = DEFAULT_RATIOS, refine_steps: int = 10, refine_seconds: float = 5.0,
                 weights: str | os.PathLike | None = None):
        self.config = (config or StyleConfig()).replace(size=size, optimizer="lbfgs")
        c, s = data.default_images()
        self.content = as_image(content if content is not None else c, size)
        self.style = as_image(style if style is not None else s, size)
        self.weights = weights
        self.objective = build_objective(self.config, self.content, [self.style], weights=weights)
        self.ratios = tuple(float(r) for r in ratios)
        self.coarse: list[np.ndarray] | None = None
        self.refine_steps, self.refine_seconds = refine_steps, refine_seconds
        self.alpha, self.beta, self.tv = self.config.alpha, self.config.beta, self.config.tv
        self.current = self.content.copy()
        self.last_source = "content"
        self.objective.value_and_grad(self.current[None])  # trace both functions once, up front
        self.loss()

    @property
    def ratio(self) -> float:
        """Return the current beta/alpha."""
        return self.beta / self.alpha

    def precompute(self, steps: int = 30, progress: bool = False) -> list[np.ndarray]:
        """Run one batched sweep over `ratios` (alpha fixed, TV as configured) and keep its images."""
        results = sweep(self.content, self.style, self.config.replace(steps=steps),
                        ratio_settings(self.ratios, self.alpha), progress=progress, weights=self.weights)
        self.coarse = [r.image for r in results]
        self.current = self.coarse[nearest_index(self.ratios, self.ratio)]
        self.last_source = "precomputed"
        return self.coarse

    def start_image(self, alpha: float, beta: float) -> tuple[np.ndarray, str]:
        """Return (the image to show at once and start from, where it came from) for new weights."""
        if self.coarse is not None and not math.isclose(beta / alpha, self.ratio, rel_tol=1e-6):
            i = nearest_index(self.ratios, beta / alpha)
            return self.coarse[i], f"precomputed beta/alpha = {self.ratios[i]:.0e}"
        return self.current, "current image"

    def refine(self, start: np.ndarray, steps: int | None = None,
               on_progress: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Return `start` improved by a few L-BFGS evaluations under the current weights (time-capped)."""
        steps = steps or self.refine_steps
        t0 = time.perf_counter()

        def cb(step, image, terms):
            if on_progress is not None and step % 4 == 0:
                on_progress(image)
            return time.perf_counter() - t0 > self.refine_seconds

        tracker = _Tracker(steps, cb, False, "refine")
        run_lbfgs(self.objective, start.astype(np.float32), steps, tracker)
        tracker.close()
        return np.clip(tracker.best_image if tracker.best_image is not None else start, 0.0, 1.0)

    def update(self, alpha: float, beta: float, tv: float, show: Callable[[np.ndarray], None] | None = None,
               steps: int | None = None) -> np.ndarray:
        """Set new weights; `show` the nearest image at once, refine it, show and return the result."""
        start, self.last_source = self.start_image(alpha, beta)
        if show is not None:
            show(start)
        self.alpha, self.beta, self.tv = float(alpha), float(beta), float(tv)
        self.objective.set_weights(alpha=self.alpha, beta=self.beta, tv=self.tv)
        self.current = self.refine(start, steps, on_progress=show)
        if show is not None:
            show(self.current)
        return self.current

    def loss(self, image: np.ndarray | None = None) -> float:
        """Return the current objective's total at `image` (default the current image)."""
        terms = self.objective.loss_terms((self.current if image is None else image)[None])
        return float(terms["total"][0])

    def scale_check(self, k: float = 10.0, steps: int = 20, start: np.ndarray | None = None) -> dict:
        """Run the same refinement with (alpha, beta, tv), (k alpha, k beta, tv) and (k alpha, k beta, k tv).

        Returns the three images and the max pixel differences from the first: scaling all three
        weights changes nothing (L-BFGS is invariant to scaling the objective); scaling alpha and
        beta alone changes the image only through the relatively weaker TV term.
        """
        start = self.content if start is None else start
        a, b, t = self.alpha, self.beta, self.tv
        out = {}
        for key, (aa, bb, tt) in {"base": (a, b, t), "ab_scaled": (k * a, k * b, t),
                                  "all_scaled": (k * a, k * b, k * t)}.items():
            self.objective.set_weights(alpha=aa, beta=bb, tv=tt)
            out[key] = self.refine(start, steps)
        self.objective.set_weights(alpha=a, beta=b, tv=t)
        out["diff_ab_scaled"] = float(np.abs(out["ab_scaled"] - out["base"]).max())
        out["diff_all_scaled"] = float(np.abs(out["all_scaled"] - out["base"]).max())
        out["k"] = k
        return out


class SliderPanel:
    """ipywidgets front end: alpha, beta and TV FloatLogSliders, a ratio read-out and the preview Image."""

    def __init__(self, engine: PreviewEngine, display_width: int = 384):
        import ipywidgets as W

        self.engine = engine
        slider = dict(continuous_update=False, readout_format=".1e", style={"description_width": "60px"},
                      layout=W.Layout(width="420px"))
        self.alpha = W.FloatLogSlider(value=engine.alpha, base=10, min=0, max=8, step=0.25, description="alpha",
                                      **slider)
        self.beta = W.FloatLogSlider(value=engine.beta, base=10, min=-6, max=6, step=0.25, description="beta",
                                     **slider)
        self.tv = W.FloatLogSlider(value=max(engine.tv, 1e-3), base=10, min=-3, max=4, step=0.25,
                                   description="TV", **slider)
        self.readout = W.HTML(value=self._readout())
        self.status = W.HTML(value="")
        self.preview = W.Image(value=png_bytes(engine.current), format="png", layout=W.Layout(width=f"{display_width}px"))
        self.up = W.Button(description="alpha, beta x10", tooltip="scale alpha and beta together: same ratio")
        self.down = W.Button(description="alpha, beta /10", tooltip="scale alpha and beta together: same ratio")
        self.up.on_click(lambda _: self.scale(10.0))
        self.down.on_click(lambda _: self.scale(0.1))
        self._busy = False
        self.timings: dict[str, float] = {}
        for s in (self.alpha, self.beta, self.tv):
            s.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([W.VBox([self.alpha, self.beta, self.tv, W.HBox([self.up, self.down])]),
                                      self.preview]), self.readout, self.status])

    def _readout(self) -> str:
        e = self.engine
        return f"<b>{format_ratio(e.alpha, e.beta, e.tv)}</b>"

    def show(self, image: np.ndarray) -> None:
        """Put an image into the preview."""
        self.preview.value = png_bytes(image)

    def _on_change(self, change=None) -> None:
        if self._busy:
            return
        t0 = time.perf_counter()
        e = self.engine
        before = e.current
        first = []

        def show(image):
            self.show(image)
            first.append(time.perf_counter() - t0)

        e.update(self.alpha.value, self.beta.value, self.tv.value, show=show)
        self.timings = {"first_image_s": first[0], "refined_s": time.perf_counter() - t0}
        self.readout.value = self._readout()
        self.status.value = (f"started from the {e.last_source} (shown after {first[0] * 1000:.0f} ms); "
                             f"refined in {self.timings['refined_s']:.1f} s; loss {e.loss():.4g}; "
                             f"max pixel change {np.abs(e.current - before).max():.3f}")

    def scale(self, k: float) -> None:
        """Multiply alpha and beta by k together (the ratio stays) and refine from the current image."""
        self._busy = True
        try:
            self.alpha.value = self.alpha.value * k
            self.beta.value = self.beta.value * k
        finally:
            self._busy = False
        self._on_change()

    def set_values(self, alpha: float | None = None, beta: float | None = None, tv: float | None = None) -> None:
        """Move several sliders at once, updating the preview once."""
        self._busy = True
        try:
            for s, v in ((self.alpha, alpha), (self.beta, beta), (self.tv, tv)):
                if v is not None:
                    s.value = v
        finally:
            self._busy = False
        self._on_change()


def slider_panel(content=None, style=None, *, size: int = 128, precompute_steps: int = 30,
                 ratios: Sequence[float] = DEFAULT_RATIOS, refine_steps: int = 10, **config) -> SliderPanel:
    """Return a ready SliderPanel: engine built, coarse ratio sweep precomputed (display `.widget`)."""
    engine = PreviewEngine(content, style, StyleConfig(**config) if config else None, size=size, ratios=ratios,
                           refine_steps=refine_steps)
    engine.precompute(precompute_steps)
    return SliderPanel(engine)
