"""Sliders for alpha, beta and the tv weight driving a live preview (notebook 07).

The logic lives in `PreviewEngine`, plain Python that tests call without a browser:

1. `set_presets(ratios, images)` takes finished images for a coarse, log-spaced set of beta/alpha
   ratios (notebook 07 makes them with one batched `sweep()` in view; `precompute()` does the same
   here), so every slider position has a nearby finished image.
2. `update(alpha, beta, tv)` shows the preset nearest in log(beta/alpha) at once
   (a visible change within a fraction of a second of releasing a slider), then refines
   it with a few warm-started L-BFGS evaluations on one persistent Objective whose weights
   are changed in place: moving a slider never retraces the tf.function.

`SliderPanel` wraps the engine in ipywidgets (alpha and beta FloatLogSliders and a tv slider
whose first stop is 0, all with continuous_update=False; the preview shown large above them,
scaled smoothly by the browser; a ratio read-out and two buttons that scale alpha, beta and tv
together, greyed out where a slider would run past its end). A release updates the read-out, a "refining..."
status and the nearest preset image at once, in the kernel's message handler; the refinement runs in a
background thread that a newer release cancels, so quick key presses never queue up behind each other.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import assets
from .config import PREVIEW_RATIOS, StyleConfig, paper_alpha_over_beta
from .images import as_image, to_uint8
from .objective import build_objective
from .optimizers import new_lbfgs, run_lbfgs
from .sweep import ratio_settings, sweep
from .tracking import Tracker

DEFAULT_RATIOS = PREVIEW_RATIOS  # beta/alpha presets for the normalised VGG19: Fig. 3's and the default 3


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


SLIDER_FORMAT = ".3"  # d3-format of the sliders' read-outs (no type: d3's ".3~g"); `fmt` writes numbers the same way


def fmt(x: float) -> str:
    """Return x as the sliders show it (d3's ".3": 3 significant digits, trailing zeros dropped; 0.1, 31.6, 1e+3).

    Like JavaScript's toPrecision(3): plain digits for exponents -6 to 2, else an exponent without padding.
    """
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.2e}".split("e")  # rounded to 3 significant digits first, as toPrecision does
    e = int(exponent)
    if -6 <= e < 3:
        text = f"{x:.{2 - e}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{mantissa.rstrip('0').rstrip('.')}e{e:+d}"


def tv_stops(tv: float, decades: int = 2, per_decade: int = 4) -> list[float]:
    """Return the tv slider's values: 0, then log-spaced stops `decades` either side of `tv` (1e-6 ... 1 if tv is 0)."""
    lo, hi = (math.floor(math.log10(tv)) - decades, math.floor(math.log10(tv)) + decades) if tv > 0 else (-6, 0)
    stops = {round(10.0 ** (k / per_decade), 12) for k in range(lo * per_decade, hi * per_decade + 1)}
    return [0.0] + sorted(stops | ({float(tv)} if tv > 0 else set()))


def nearest_stop(stops: Sequence[float], value: float) -> int:
    """Return the index of the stop nearest to `value` (0 is the stop of values <= 0; the others on a log scale)."""
    if value <= 0 or len(stops) == 1:
        return 0
    return 1 + nearest_index(stops[1:], value)


def format_ratio(alpha: float, beta: float, tv: float, paper: float | None = None) -> str:
    """Return the read-out shown under the sliders (and the paper's beta/alpha, `paper`, if given)."""
    text = f"alpha = {fmt(alpha)}   beta = {fmt(beta)}   tv = {fmt(tv)}   ->   beta/alpha = {fmt(beta / alpha)}"
    return text + (f"   (the paper's beta/alpha: {fmt(paper)})" if paper is not None else "")


class PreviewEngine:
    """Preview-size stylization that follows the sliders: nearest preset image, then refined."""

    def __init__(
        self,
        content=None,
        style=None,
        config: StyleConfig | None = None,
        *,
        size: int = 128,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        refine_steps: int = 10,
        refine_seconds: float = 5.0,
        weights: str | os.PathLike | None = None,
    ):
        self.config = (config or StyleConfig.normalized()).replace(size=size, optimizer="lbfgs")
        c, s = assets.default_images()
        self.content = as_image(content if content is not None else c, size)
        self.style = as_image(style if style is not None else s, size)
        self.weights = weights
        self.objective = build_objective(self.config, self.content, [self.style], weights=weights)
        self.lbfgs = new_lbfgs(self.objective.value_and_grad, (1,) + self.content.shape)  # every refinement's
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

    def paper_ratio(self, alpha: float | None = None, beta: float | None = None) -> float:
        """Return the paper's beta/alpha equivalent to (alpha, beta) (default the current weights) at preview size."""
        return 1.0 / paper_alpha_over_beta(
            self.alpha if alpha is None else alpha,
            self.beta if beta is None else beta,
            self.content.shape[:2],
            self.config.content_layers[0],
        )

    def precompute(self, steps: int = 30, progress: bool = False) -> list[np.ndarray]:
        """Return the presets' images after one batched sweep over `ratios` (alpha fixed, tv as configured)."""
        results = sweep(
            self.content,
            self.style,
            self.config.replace(steps=steps),
            ratio_settings(self.ratios, self.alpha),
            progress=progress,
            weights=self.weights,
        )
        return self.set_presets(self.ratios, [r.image for r in results])

    def set_presets(self, ratios: Sequence[float], images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return the preset images after keeping them, one per beta/alpha in `ratios`, as the sliders' starts."""
        if len(ratios) != len(images) or not len(ratios):
            raise ValueError(f"one image per preset ratio: {len(ratios)} ratios, {len(images)} images")
        for image in images:
            if np.shape(image) != self.content.shape:
                raise ValueError(f"a preset image has shape {np.shape(image)}, the preview {self.content.shape}")
        self.ratios = tuple(float(r) for r in ratios)
        self.coarse = [np.asarray(image, np.float32) for image in images]
        self.current = self.coarse[nearest_index(self.ratios, self.ratio)]
        self.last_source = "preset"
        return self.coarse

    def start_image(self, alpha: float, beta: float) -> tuple[np.ndarray, str]:
        """Return (the image to show at once and start from, where it came from) for new weights."""
        if self.coarse is not None and not math.isclose(beta / alpha, self.ratio, rel_tol=1e-6):
            i = nearest_index(self.ratios, beta / alpha)
            return self.coarse[i], f"preset beta/alpha = {fmt(self.ratios[i])}"
        return self.current, "current image"

    def refine(
        self,
        start: np.ndarray,
        steps: int | None = None,
        on_progress: Callable[[np.ndarray], None] | None = None,
        seconds: float | None = -1.0,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Return `start` improved by a few L-BFGS evaluations under the current weights.

        Stops after `seconds` (default `refine_seconds`; None: no time cap, so the result does not depend on the
        machine's speed) or as soon as `cancelled()` is true.
        """
        steps = steps or self.refine_steps
        seconds = self.refine_seconds if seconds == -1.0 else seconds
        t0 = time.perf_counter()

        def cb(step, image, terms):
            if on_progress is not None:  # once per compiled L-BFGS call (about a quarter second of evaluations)
                on_progress(image)
            late = seconds is not None and time.perf_counter() - t0 > seconds
            return late or (cancelled is not None and cancelled())

        tracker = Tracker(steps, cb, False, "refine")
        run_lbfgs(self.objective, start.astype(np.float32), steps, tracker, lbfgs=self.lbfgs)
        tracker.close()
        return np.clip(tracker.best_image if tracker.best_image is not None else start, 0.0, 1.0)

    def update(
        self,
        alpha: float,
        beta: float,
        tv: float,
        show: Callable[[np.ndarray], None] | None = None,
        steps: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Set new weights; `show` the nearest image at once, refine it, show and return the result."""
        start = self.jump(alpha, beta, tv)
        if show is not None:
            show(start)
        return self.settle(start, show, steps, cancelled)

    def jump(self, alpha: float, beta: float, tv: float) -> np.ndarray:
        """Set new weights and return the image to show at once (the nearest preset, or the current one)."""
        start, self.last_source = self.start_image(alpha, beta)
        self.alpha, self.beta, self.tv = float(alpha), float(beta), float(tv)
        self.objective.set_weights(alpha=self.alpha, beta=self.beta, tv=self.tv)
        self.current = start
        return start

    def settle(
        self,
        start: np.ndarray,
        show: Callable[[np.ndarray], None] | None = None,
        steps: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Return `start` refined under the current weights (kept as the current image unless cancelled), shown."""
        refined = self.refine(start, steps, on_progress=show, cancelled=cancelled)
        if cancelled is None or not cancelled():
            self.current = refined
            if show is not None:
                show(refined)
        return refined

    def loss(self, image: np.ndarray | None = None) -> float:
        """Return the current objective's total at `image` (default the current image)."""
        terms = self.objective.loss_terms((self.current if image is None else image)[None])
        return float(terms["total"][0])


class SliderPanel:
    """ipywidgets front end: the preview, alpha and beta log sliders, a tv slider from 0, a ratio read-out, a status."""

    def __init__(self, engine: PreviewEngine, decades: float = 0.5, box: tuple[int, int] = (640, 480)):
        """Build the widgets; the preview is shown as large as fits `box` (width, height in px), aspect kept."""
        import ipywidgets as W

        self.engine = engine
        slider = dict(
            continuous_update=False,
            readout_format=SLIDER_FORMAT,
            style={"description_width": "60px"},
            layout=W.Layout(width="420px"),
            base=10,
            step=0.25,
        )
        lo, hi = math.log10(min(engine.ratios)) - decades, math.log10(max(engine.ratios)) + decades
        a = round(math.log10(engine.alpha))  # the beta slider spans the presets' ratios (+- `decades`) at this alpha
        self.alpha = W.FloatLogSlider(value=engine.alpha, min=a - 2, max=a + 2, description="alpha", **slider)
        self.beta = W.FloatLogSlider(value=engine.beta, min=a + lo, max=a + hi, description="beta", **slider)
        stops = tv_stops(engine.tv)  # the first stop is 0, which a log slider cannot show
        self.tv = W.SelectionSlider(
            options=[(fmt(v), v) for v in stops],
            index=nearest_stop(stops, engine.tv),
            description="tv",
            continuous_update=False,
            style=slider["style"],
            layout=slider["layout"],
        )
        self.readout = W.HTML(value=self._readout())
        self.status = W.HTML(value="")
        h, w = engine.current.shape[:2]
        zoom = min(box[0] / w, box[1] / h)  # shown large; the browser scales the small PNG smoothly (bilinear)
        self.preview = W.Image(
            value=png_bytes(engine.current),
            format="png",
            layout=W.Layout(width=f"{round(w * zoom)}px", height=f"{round(h * zoom)}px"),
        )
        tip = "scale alpha, beta and tv together: same ratios, same picture"
        self.up = W.Button(description="alpha, beta x10 (and tv)", tooltip=tip, layout=W.Layout(width="auto"))
        self.down = W.Button(description="alpha, beta /10 (and tv)", tooltip=tip, layout=W.Layout(width="auto"))
        self.up.on_click(lambda _: self.scale(10.0))
        self.down.on_click(lambda _: self.scale(0.1))
        self._busy = False
        self._generation = 0  # bumped on every release; a refinement from an older one stops and shows nothing
        self._lock = threading.Lock()  # one refinement at a time on the shared Objective
        self._thread: threading.Thread | None = None
        self.timings: dict[str, float] = {}
        for s in (self.alpha, self.beta, self.tv):
            s.observe(self._on_change, names="value")
        self.widget = W.VBox(
            [self.preview, self.alpha, self.beta, self.tv, W.HBox([self.up, self.down]), self.readout, self.status]
        )
        self._enable_buttons()

    def _readout(self) -> str:
        """Return the read-out HTML for the sliders' current values."""
        a, b, t = self.alpha.value, self.beta.value, self.tv.value
        return f"<b>{format_ratio(a, b, t, self.engine.paper_ratio(a, b))}</b>"

    def show(self, image: np.ndarray) -> None:
        """Put an image into the preview."""
        self.preview.value = png_bytes(image)

    def _on_change(self, change=None) -> None:
        """Update read-out, status and preview at once, then refine in a background thread (cancelling older ones)."""
        if self._busy:
            return
        t0 = time.perf_counter()
        self._generation += 1
        generation = self._generation
        self.readout.value = self._readout()
        self._enable_buttons()
        self.status.value = "refining..."
        with self._lock:  # the previous refinement sees the new generation at its next evaluation and stops
            start = self.engine.jump(self.alpha.value, self.beta.value, self.tv.value)
        source = self.engine.last_source
        self.show(start)
        self.timings = {"first_image_s": time.perf_counter() - t0}
        self._thread = threading.Thread(target=self._refine, args=(generation, start, source, t0), daemon=True)
        self._thread.start()

    def _refine(self, generation: int, start: np.ndarray, source: str, t0: float) -> None:
        """Refine `start` unless a newer release came first; then report in the status line."""

        def stale() -> bool:
            return generation != self._generation

        with self._lock:
            if stale():
                return
            e = self.engine
            e.settle(start, self.show, cancelled=stale)
            if stale():
                return
            self.timings["refined_s"] = time.perf_counter() - t0
            self.status.value = (
                f"started from the {source} (shown after {self.timings['first_image_s'] * 1000:.0f} ms); "
                f"refined in {self.timings['refined_s']:.1f} s; loss {fmt(e.loss())}; "
                f"max pixel change {np.abs(e.current - start).max():.2f}"
            )

    def wait(self, timeout: float | None = None) -> None:
        """Block until the latest refinement has finished (for scripts and tests; the browser never waits)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def fits(self, k: float) -> bool:
        """Return whether alpha, beta and tv times k all stay within their sliders (a tv of 0 stays 0)."""
        on_log = all(s.min - 1e-9 <= math.log10(s.value * k) <= s.max + 1e-9 for s in (self.alpha, self.beta))
        stops, tv = [v for _, v in self.tv.options], self.tv.value * k
        return on_log and (tv == 0 or stops[1] * (1 - 1e-9) <= tv <= stops[-1] * (1 + 1e-9))

    def _enable_buttons(self) -> None:
        """Grey out a scaling button where it would push a slider past its end (and change the ratios)."""
        self.up.disabled, self.down.disabled = not self.fits(10.0), not self.fits(0.1)

    def scale(self, k: float) -> None:
        """Multiply alpha, beta and tv by k (ratios and picture stay) and refine; refuse where a slider would end."""
        if not self.fits(k):
            self.status.value = f"x{fmt(k)} would push a slider past its end and change the ratios: not scaled"
            return
        self._busy = True
        try:
            self.alpha.value = self.alpha.value * k
            self.beta.value = self.beta.value * k
            self.tv.index = nearest_stop([v for _, v in self.tv.options], self.tv.value * k)
        finally:
            self._busy = False
        self._on_change()

    def set_values(self, alpha: float | None = None, beta: float | None = None, tv: float | None = None) -> None:
        """Move several sliders at once, updating the preview once."""
        self._busy = True
        try:
            for s, v in ((self.alpha, alpha), (self.beta, beta)):
                if v is not None:
                    s.value = v
            if tv is not None:  # the tv slider has fixed stops: take the nearest
                self.tv.index = nearest_stop([v for _, v in self.tv.options], tv)
        finally:
            self._busy = False
        self._on_change()
