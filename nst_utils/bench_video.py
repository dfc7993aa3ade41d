"""Video, side by side in one run: `--independent`, the warm start alone and the full method (Ruder et al. 2016).

Two generated clips, each a camera moving over a registry photo (video.camera_clip): a pan right with a zoom in over
the default photo, and a pan left with a zoom out over tubingen.jpg. Each is stylised with the default painting in
three modes at one budget per frame (`--budget` evaluations for every frame, the first included):

- independent: each frame alone from its own content (`nst video --independent`), the flickering baseline;
- warm: each later frame starts from the previous result warped by the optical flow, no temporal term
  (`--temporal-weight 0`: what cysmith/neural-style-tf does in effect);
- full: the warm start and the temporal term at its default weight (`nst video`).

Then, on the first clip, the defaults (the first frame `--first-steps`, each later frame `--budget`) against
independent frames at `--first-steps` each: later frames cost less than the first.

Each row: the mean warping error between consecutive output frames over the pixels the forward-backward check keeps
(flow.warping_error, mean over the pairs), its ratio to independent's at the same budget, the mean absolute
difference between neighbouring pixels of the output frames (sharpness: repeated resampling would lower it),
evaluations and seconds for the first frame and per later frame, and the optical flow's share of the later frames'
time. A 2-frame run of each clip first traces the graphs, so every timed row is warm.

    python -m nst_utils.bench_video            # 8 frames at 128 px, 100 evaluations per frame, defaults 300 / 100
    python -m nst_utils.bench_video --quick    # 6 frames at 96 px, 20 per frame, defaults 60 / 20 (a CI-sized check)

It prints a table and, last, one JSON line (a list of the rows).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import StyleConfig
from .frames import write_frames
from .host import peak_memory_mb
from .video import FRAME_STEPS, VideoResult, camera_clip, stylize_video

# (name, photo, pan in px per frame at 128 px (scaled with the size), zoom per frame)
CLIPS = (("garden", "japanese_garden.jpg", 2.0, 1.01), ("tubingen", "tubingen.jpg", -2.0, 1 / 1.01))
MODES = ("independent", "warm", "full")
FULL = {"frames": 8, "size": 128, "budget": FRAME_STEPS, "first_steps": StyleConfig().steps}
QUICK = {"frames": 6, "size": 96, "budget": 20, "first_steps": 60}
HEADER = (
    f"{'clip':<9} {'mode':<12} {'evals':>8} {'warp err':>9} {'vs indep':>8} {'sharp':>6} "
    f"{'s first':>7} {'s later':>7} {'flow %':>6}"
)


@dataclass
class Row:
    """One stylised clip: its mode, budget and what it measured."""

    clip: str
    mode: str
    first_steps: int  # the budget asked for: the first frame's evaluations
    later_steps: int  # and each later frame's (independent: first_steps)
    first_evals: int  # the evaluations made
    later_evals: float  # mean over the later frames
    warping_error: float
    ratio: float  # warping_error over independent's at the same budget (NaN for a row without one)
    sharpness: float
    first_s: float
    later_s: float  # mean seconds per later frame
    flow_share: float  # the flow's share of the later frames' seconds


def sharpness(images: list[np.ndarray]) -> float:
    """Return the mean absolute difference between horizontally and vertically neighbouring pixels over `images`."""
    return float(np.mean([(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()) / 2 for a in images]))


def make_clip(photo: str, frames: int, size: int, pan: float, zoom: float, folder: Path) -> Path:
    """Return a folder of `frames` PNG frames (long side `size`) of a camera panning `pan` px per frame at 128 px
    (scaled with `size`) and zooming by `zoom` per frame over the registry image `photo`."""
    return write_frames(camera_clip(photo, frames, size, pan * size / 128, zoom), folder, 24)


def stylise(clip: Path, mode: str, size: int, first: int, later: int) -> VideoResult:
    """Return the VideoResult of stylising `clip` at `size` px in `mode` (MODES) with `first` evaluations for the first
    frame and `later` for each later one (independent: `first` for every frame)."""
    modes = {"independent": {"independent": True}, "warm": {"temporal": 0.0}, "full": {}}
    config = StyleConfig(size=size, steps=first)
    return stylize_video(clip, None, None, config=config, frame_steps=later, progress=False, **modes[mode])


def measure(name: str, clip: Path, mode: str, size: int, first: int, later: int) -> Row:
    """Return the Row of one stylised clip (the ratio left NaN: the caller fills it)."""
    r = stylise(clip, mode, size, first, later)
    rest = r.stats[1:]
    later_s = sum(s.seconds for s in rest)
    return Row(
        clip=name,
        mode=mode,
        first_steps=first,
        later_steps=first if mode == "independent" else later,
        first_evals=r.stats[0].evaluations,
        later_evals=float(np.mean([s.evaluations for s in rest])),
        warping_error=r.mean_warping_error,
        ratio=math.nan,
        sharpness=sharpness(r.images),
        first_s=r.stats[0].seconds,
        later_s=later_s / len(rest),
        flow_share=sum(s.flow_seconds for s in rest) / later_s,
    )


def line(row: Row) -> str:
    """Return `row` as a line of the table."""
    evals = f"{row.first_evals}/{row.later_evals:.0f}"
    ratio = "-" if math.isnan(row.ratio) else f"{row.ratio:.3f}"
    return (
        f"{row.clip:<9} {row.mode:<12} {evals:>8} {row.warping_error:>9.5f} {ratio:>8} {row.sharpness:>6.4f} "
        f"{row.first_s:>7.2f} {row.later_s:>7.2f} {100 * row.flow_share:>6.2f}"
    )


def bench(frames: int, size: int, budget: int, first_steps: int, clips=CLIPS, echo=print) -> list[Row]:
    """Return the rows of the benchmark (printed by `echo` as they finish): the three modes at `budget` evaluations
    per frame on each clip, then, on the first clip, the full method at `first_steps` / `budget` and independent
    frames at `first_steps`."""
    rows: list[Row] = []
    echo(HEADER)
    with tempfile.TemporaryDirectory(prefix="nst-bench-video-") as tmp:
        for k, (name, photo, pan, zoom) in enumerate(clips):
            clip = make_clip(photo, frames, size, pan, zoom, Path(tmp) / name)
            warmup = make_clip(photo, 2, size, pan, zoom, Path(tmp) / f"{name}-warmup")
            stylise(warmup, "full", size, 3, 3)  # traces this size's graphs: the timed rows are warm
            runs = [(mode, budget, budget) for mode in MODES]
            if k == 0:
                runs += [("independent", first_steps, first_steps), ("full", first_steps, budget)]
            baseline: dict[int, float] = {}
            for mode, first, later in runs:
                row = measure(name, clip, mode, size, first, later)
                if mode == "independent":
                    baseline[first] = row.warping_error
                row.ratio = row.warping_error / baseline[first] if first in baseline else math.nan
                rows.append(row)
                echo(line(row))
    return rows


def summary(rows: list[Row]) -> list[str]:
    """Return the closing lines: each clip's full/independent ratio against the goal (at most 1/3), and whether later
    frames cost less than the first at the defaults."""
    out = []
    for row in rows:
        if row.mode == "full" and row.first_steps == row.later_steps:
            verdict = "meets" if row.ratio <= 1 / 3 else "misses"
            out.append(f"{row.clip}: full / independent warping error {row.ratio:.3f} ({verdict} the goal <= 1/3)")
    defaults = [r for r in rows if r.mode == "full" and r.first_steps != r.later_steps]
    for row in defaults:
        cheaper = "cheaper" if row.later_s < row.first_s else "NOT cheaper"
        out.append(
            f"{row.clip}, defaults {row.first_evals}/{row.later_evals:.0f}: a later frame {row.later_s:.2f} s, "
            f"the first {row.first_s:.2f} s ({cheaper})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table, the summary and one JSON line; return the exit code."""
    p = argparse.ArgumentParser(prog="python -m nst_utils.bench_video", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="6 frames at 96 px, 20 per frame, 60 / 20 (a CI-sized check)")
    p.add_argument("--frames", type=int, help="frames per clip (default 8; --quick 6)")
    p.add_argument("--size", type=int, help="long side in px (default 128; --quick 96)")
    p.add_argument("--budget", type=int, help="evaluations per frame (default 100; --quick 20)")
    p.add_argument("--first-steps", type=int, help="the first frame's evaluations at the defaults (300; --quick 60)")
    args = p.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    settings.update({k: v for k, v in vars(args).items() if k in settings and v is not None})
    t0 = time.perf_counter()
    rows = bench(**settings)
    for text in summary(rows):
        print(text)
    print(f"{time.perf_counter() - t0:.0f} s in all, peak memory {peak_memory_mb():.0f} MiB, settings {settings}")
    print(json.dumps([vars(r) for r in rows]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
