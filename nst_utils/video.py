"""Video: a clip stylised frame by frame without flicker (Ruder, Dosovitskiy & Brox 2016, arXiv 1604.08610).

Frame 1 is stylised as `stylize` would. Each later frame starts from the previous result warped into it by the
backward optical flow (flow.py) and adds the short-term temporal loss (objective.temporal_loss), which pulls every
pixel that the forward-backward check finds visible in both frames (weight c = 1) towards that warped result; being
near its optimum already, it needs fewer evaluations (`frame_steps`) than the first. Three modes, compared in the
benchmark: the full method (warm start and temporal term), the warm start alone (`temporal=0`, what
cysmith/neural-style-tf does in effect) and `independent` (each frame from its own content, the flickering baseline).

Finished frames go to a work folder as they finish (the output folder itself, or `OUTPUT.frames/` beside a video file,
encoded at the end and then removed), with the run's settings in a small JSON file: Ctrl-C keeps every finished frame,
and the same call again continues after the last one; a different call refuses the folder rather than mix two clips.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .config import NSTError, StyleConfig, as_config
from .flow import PRESETS, flow_for, require_video, warp, warping_error
from .frames import DEFAULT_FPS, ENCODERS, FRAME_SUFFIXES, frame_path, is_video, read_frames, write_frames
from .images import as_image, gray, load_image, resize, to_uint8
from .inputs import check_arguments
from .outputs import check_aliases, check_output, input_files, save_image, write_text
from .run import keep_objective, plan, run
from .tiling import TiledObjective
from .tracking import Callback

# The temporal term's default weight, as a multiple of the content weight alpha, per network (normalize_vgg False /
# True; the raw VGG19's content and style terms are far larger than the normalised one's, the temporal term, in
# pixels, the same for both). Measured on 8 frames of a pan and zoom over japanese_garden.jpg (128 px, Picasso's
# style, 100 evaluations per frame): the mean warping error over visible pixels is 0.073 (raw) and 0.12 (normalised)
# of independent frames' (0.24 and 0.26 for the warm start alone); ten times the weight gives 0.017 and 0.031 but
# blurs (each frame is the last one resampled again: the mean gradient of frame 8 falls by 40% and 27%, not 23% and
# 16%) and costs style.
TEMPORAL_PER_ALPHA = {False: 1e5, True: 100.0}
# Evaluations for each frame after the first (the first takes config.steps, 300 by default). Measured as above with the
# defaults: frame 8's content + style loss is within 2% of a 300-evaluation run of that frame alone (50: within 4%).
FRAME_STEPS = 100
SETTINGS_FILE = ".nst-video.json"  # in the work folder: the settings its frames were made with
WORK_SUFFIX = ".frames"  # a video file's work folder: OUTPUT.mp4.frames/ beside it


@dataclass
class FrameStats:
    """What one frame cost and how it matches the frame before it."""

    index: int  # from 0
    evaluations: int
    seconds: float  # the whole frame: flow, planning, optimising, writing
    flow_seconds: float  # the optical flow (both directions) and the consistency check
    warping_error: float  # mean squared difference from the previous output warped into it, over c = 1 (NaN: first)
    message: str = ""  # the run's own message (stopped early, non-finite loss, ...)


@dataclass
class VideoResult:
    """What stylize_video produced: where, how many frames, and each frame's cost and consistency."""

    output: Path | None
    frames: int  # frames finished (written to the output, or in `images` without one)
    total: int  # frames in the clip
    fps: float
    mode: str
    temporal: float
    stats: list[FrameStats] = field(default_factory=list)  # the frames this call computed
    resumed: int = 0  # frames already finished when this call started
    interrupted: bool = False
    message: str = ""
    images: list[np.ndarray] = field(default_factory=list)  # the frames, when there is no output

    @property
    def mean_warping_error(self) -> float:
        """Return the mean warping error over the frames this call computed after the first (NaN if none)."""
        errors = [s.warping_error for s in self.stats if math.isfinite(s.warping_error)]
        return float(np.mean(errors)) if errors else float("nan")

    @property
    def evaluations(self) -> list[int]:
        """Return the loss evaluations of each frame this call computed."""
        return [s.evaluations for s in self.stats]

    @property
    def seconds(self) -> list[float]:
        """Return the seconds of each frame this call computed."""
        return [s.seconds for s in self.stats]


def default_temporal(config: StyleConfig) -> float:
    """Return the temporal term's default weight for `config`: TEMPORAL_PER_ALPHA of its network times its alpha."""
    return TEMPORAL_PER_ALPHA[config.normalize_vgg] * config.alpha


def work_folder(output: str | os.PathLike) -> Path:
    """Return where the frames of a run writing `output` go as they finish: the folder itself, or OUTPUT.frames/
    beside a video file."""
    p = Path(output)
    return p.with_name(p.name + WORK_SUFFIX) if is_video(p) else p


def check_video_output(
    output: str | os.PathLike, source: str | os.PathLike, style, weights=None, flag: str = "output"
) -> None:
    """Return None if a run from `source` can write `output` (a folder of frames or a video file this tool encodes),
    that is neither an input nor its own work folder; else raise NSTError, one line."""
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix in FRAME_SUFFIXES:
        raise NSTError(
            f"{flag} {out} is an image name: give a folder for the frames or a video file ({', '.join(ENCODERS)})"
        )
    if is_video(out) and suffix not in ENCODERS:
        raise NSTError(f"{flag} {out}: {suffix} videos are read but not written; write one of {', '.join(ENCODERS)}")
    work = work_folder(out)
    inputs = {"the input video": Path(source)} | input_files(None, style, weights=weights)
    check_aliases([(flag, out)] + ([("its work folder", work)] if work != out else []), inputs)
    if work.exists() and not work.is_dir():
        raise NSTError(f"{work} is a file, not a folder of frames; choose another {flag}")
    check_output(frame_path(work, 0), flag=flag)  # the work folder can be made and written
    if work != out:
        check_output(out, image=False, flag=flag)


def _identity(source) -> str:
    """Return what names an input in the settings: its resolved path, a registry name, or the hash of an array."""
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        return str(p.resolve()) if p.exists() else str(source)
    if source is None:
        return "default"
    return "sha1:" + hashlib.sha1(np.ascontiguousarray(np.asarray(source)).tobytes()).hexdigest()


def _check_settings(work: Path, settings: dict) -> int:
    """Return how many frames the work folder already holds for these settings (0 for a new or empty folder); raise
    NSTError if it holds another run's frames or other files."""
    saved_path = work / SETTINGS_FILE
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError) as exc:
            raise NSTError(f"cannot read {saved_path} ({exc}); remove {work} to start again") from None
        differ = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
        if differ:
            raise NSTError(
                f"{work} holds the frames of another run ({', '.join(differ)} differ); remove it to start again, "
                "or choose another output"
            )
        done = 0
        while frame_path(work, done).exists():
            done += 1
        return done
    if work.is_dir() and any(work.iterdir()):
        raise NSTError(f"{work} is not empty and holds no run's frames; choose another output (or empty it)")
    return 0


def _settings(
    source, styles: list, config: StyleConfig, mode: str, temporal: float, flow_preset: str, frame_steps: int, n: int
) -> dict:
    """Return the JSON-ready settings a work folder's frames are made with (two runs share a folder only if equal)."""
    return json.loads(
        json.dumps(
            {
                "source": _identity(source),
                "frames": n,
                "styles": [_identity(s) for s in styles],
                "config": config.to_dict(),
                "mode": mode,
                "temporal": temporal if mode == "full" else 0.0,
                "flow": flow_preset,
                "frame_steps": frame_steps,
            }
        )
    )


def _quantised(image: np.ndarray) -> np.ndarray:
    """Return `image` as its 8-bit file holds it (the next frame starts from that, resumed or not)."""
    return to_uint8(image).astype(np.float32) / np.float32(255.0)


def stylize_video(
    source: str | os.PathLike,
    style=None,
    output: str | os.PathLike | None = None,
    *,
    config: StyleConfig | None = None,
    independent: bool = False,
    temporal: float | None = None,
    warm_start: bool = True,
    frame_steps: int | None = None,
    flow_preset: str = "medium",
    fps: float = DEFAULT_FPS,
    progress: bool = True,
    weights: str | os.PathLike | None = None,
    callback: Callback | None = None,
    frame_callback: Callable[[int, np.ndarray], None] | None = None,
    during_run: contextlib.AbstractContextManager | None = None,
    **overrides,
) -> VideoResult:
    """Return a VideoResult after stylising every frame of `source` (a folder of frames or a video file) like
    `style`, written to `output` (a folder of frame_00001.png, ... or a .mp4/.mov/.webm/.gif at the input's frame
    rate; None: the frames in the result).

    Frame 1 takes `config` (with `overrides`, as stylize) and its `steps`; each later frame starts from the previous
    result warped by the optical flow (`flow_preset` of flow.PRESETS) with the temporal term of weight `temporal`
    (default: default_temporal(config); 0: the warm start alone) and `frame_steps` evaluations (default
    FRAME_STEPS). `independent`: every frame alone from its own content with `steps` (the flickering baseline);
    `warm_start=False` keeps the temporal term but starts each frame as config.init says. `fps`: a folder's rate.
    `callback` is stylize's per-evaluation callback; `frame_callback(index, image)` runs after each frame is written;
    `during_run` is entered around the frames' loop (the CLI defers signals in it). A KeyboardInterrupt stops the run
    with every finished frame kept: the same call again continues after the last one.
    """
    require_video("cv2")  # the flow: a missing extra is one line, before any work
    check_arguments(style=style, callback=callback, progress=progress)
    config = as_config(config, overrides)
    if flow_preset not in PRESETS:
        raise NSTError(f"unknown optical-flow preset {flow_preset!r}; use one of {', '.join(PRESETS)}")
    temporal = default_temporal(config) if temporal is None else temporal
    if isinstance(temporal, bool) or not isinstance(temporal, int | float) or not (0 <= temporal < math.inf):
        raise NSTError(f"the temporal weight must be a finite number >= 0, got {temporal!r}")
    frame_steps = FRAME_STEPS if frame_steps is None else frame_steps
    if isinstance(frame_steps, bool) or not isinstance(frame_steps, int) or frame_steps <= 0:
        raise NSTError(f"frame_steps must be a positive whole number of evaluations, got {frame_steps!r}")
    mode = "independent" if independent else "full" if temporal > 0 else "warm"
    styles = list(style) if isinstance(style, list | tuple) else [style]
    if output is not None:
        check_video_output(output, source, style, weights)
    frames, rate = read_frames(source, fps)
    n = len(frames)
    work = work_folder(output) if output is not None else None
    done = 0
    if work is not None:
        settings = _settings(source, styles, config, mode, float(temporal), flow_preset, frame_steps, n)
        done = _check_settings(work, settings)
        work.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(settings, indent=1), work / SETTINGS_FILE)
    result = VideoResult(
        Path(output) if output is not None else None,
        done,
        n,
        rate,
        mode,
        float(temporal) if mode == "full" else 0.0,
        resumed=done,
    )
    prev_content = as_image(frames[done - 1], config.size) if done else None
    prev_out = load_image(frame_path(work, done - 1)) if done else None
    bar = tqdm(total=n, initial=done, desc="frames", unit="frame", disable=not progress)
    try:
        with during_run or contextlib.nullcontext():
            for i in range(done, n):
                t0 = time.perf_counter()
                content = as_image(frames[i], config.size)
                backward = weights_c = None
                flow_s = 0.0
                if prev_content is not None:
                    backward, weights_c = flow_for(prev_content, content, flow_preset)
                    flow_s = time.perf_counter() - t0
                later = prev_out is not None and not independent
                cfg = config.replace(steps=frame_steps, scales=()) if later else config
                warped = warp(prev_out, backward) if later else None
                p = plan(content, style, cfg, weights=weights, init_image=warped if warm_start else None)
                try:
                    if later and temporal > 0:
                        target = gray(warped) if p.inputs.colour == "luminance" else warped
                        obj = p.objective.objective if isinstance(p.objective, TiledObjective) else p.objective
                        obj.set_temporal(target, weights_c, temporal)
                    r = run(p, callback=callback, progress=False)
                finally:
                    keep_objective(p)
                if r.interrupted:
                    result.interrupted = True
                    break
                image = _quantised(r.image)
                if work is not None:
                    save_image(image, frame_path(work, i))
                else:
                    result.images.append(image)
                error = warping_error(prev_out, image, backward, weights_c) if backward is not None else math.nan
                result.frames = i + 1
                result.stats.append(FrameStats(i, r.steps, time.perf_counter() - t0, flow_s, error, r.message))
                prev_content, prev_out = content, image
                bar.update(1)
                bar.set_postfix(evals=r.steps, refresh=False)
                if frame_callback is not None:
                    frame_callback(i, image)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    if result.interrupted:
        result.message = f"interrupted after {result.frames} of {n} frames" + (
            f"; they are in {work}: run the same command again to continue" if work is not None else ""
        )
        return result
    if output is not None and work != Path(output):
        write_frames((load_image(frame_path(work, i)) for i in range(n)), output, rate)
        shutil.rmtree(work)
    return result


def camera_clip(image, frames: int = 8, size: int = 128, pan: float = 2.0, zoom: float = 1.0) -> list[np.ndarray]:
    """Return `frames` HxWx3 frames (long side `size`) of a camera moving over `image` (a path, registry name or
    array): a window of 60% of the image's sides moving `pan` output px right per frame and shrinking by `zoom` per
    frame (zoom > 1 zooms in), centred on the image's middle at the clip's middle frame."""
    cv2 = require_video("cv2")
    img = as_image(image)
    window = 0.6 * max(img.shape[:2])
    small = resize(img, max(16, round(max(img.shape[:2]) * size / window)))  # the first window is `size` px long
    h, w = small.shape[:2]
    out_h, out_w = round(0.6 * h), round(0.6 * w)
    clip = []
    for k in range(frames):
        t = k - (frames - 1) / 2
        scale = zoom**-k  # source px per output px
        cx, cy = w / 2 + t * pan, h / 2
        # output (x, y) -> source (cx + (x - out_w / 2 + 0.5) * scale - 0.5, ...): the affine map from output to source
        m = np.array(
            [
                [scale, 0.0, cx - (out_w / 2 - 0.5) * scale - 0.5],
                [0.0, scale, cy - (out_h / 2 - 0.5) * scale - 0.5],
            ],
            np.float64,
        )
        frame = cv2.warpAffine(
            small, m, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )
        clip.append(np.clip(frame, 0.0, 1.0).astype(np.float32))
    return clip
