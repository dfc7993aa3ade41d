"""Video frames in and out: a folder of images or a video file read as RGB float frames with its frame rate, and
frames written back as a folder of PNG files or as a video file, atomically.

Reading: a folder's images (.png, .jpg, .jpeg, .webp) in natural order of their names (frame_2 before frame_10), at
a frame rate the caller gives (a folder has none: DEFAULT_FPS); a video file (.mp4, .webm, .mov, .avi through
imageio's ffmpeg plugin, .gif through its Pillow plugin) at the rate its metadata gives (a GIF's: its frame count
over the sum of its frame durations).

Writing: a path without a video extension is a folder of frame_00001.png, frame_00002.png, ... (each file written
atomically); .mp4/.mov (H.264, yuv420p), .webm (VP9) and .gif (one palette for the clip) are encoded by the ffmpeg
that imageio-ffmpeg ships into a temporary file, then copied into place by outputs.atomic_write (a temp file beside
the target, renamed over it at the end): an existing file is never left half-written. H.264 and VP9 in yuv420p need
an even width and height: an odd one is PADDED by repeating the last column or row (never cropped: no pixel of the
result is lost), so such a video reads back one pixel larger. Frame counts round-trip exactly; the frame rate is
written to 0.01 fps in mp4/mov/webm, and in a GIF to its 10 ms resolution per frame (durations alternate so that
their mean, and the rate read back, stays within one 10 ms step over the clip's length).

OpenCV and imageio are the optional `video` extra: require_video (flow.py) imports imageio when it is needed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import host
from .config import NSTError
from .flow import require_video
from .images import load_image, to_uint8
from .outputs import atomic_write, save_image

DEFAULT_FPS = 24.0  # the frame rate of a folder of frames unless the caller says otherwise
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # the images a folder of frames is read from
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".gif")  # the video files read
FRAME_NAME = "frame_{:05d}.png"  # the files a folder output gets, numbered from 1
# the video files written: extension -> (ffmpeg codec, ffmpeg's output pixel format, extra output options)
ENCODERS: dict[str, tuple[str, str, list[str]]] = {
    ".mp4": ("libx264", "yuv420p", ["-crf", "18", "-preset", "medium", "-movflags", "+faststart"]),
    ".mov": ("libx264", "yuv420p", ["-crf", "18", "-preset", "medium"]),
    ".webm": ("libvpx-vp9", "yuv420p", ["-crf", "30", "-b:v", "0"]),
    ".gif": ("gif", "pal8", ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]),
}
EVEN_SIZE = {".mp4", ".mov", ".webm"}  # yuv420p: width and height padded to even numbers
GIF_TICK_MS = 10  # a GIF stores each frame's duration in hundredths of a second


def natural_key(name: str) -> tuple:
    """Return a sort key that orders names by their text and the numbers in them as numbers (frame_2 < frame_10)."""
    parts = re.split(r"(\d+)", name.lower())
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name)


def frame_path(folder: str | os.PathLike, index: int) -> Path:
    """Return the file frame `index` (from 0) has in a folder output: folder/frame_00001.png for index 0."""
    return Path(folder) / FRAME_NAME.format(index + 1)


def is_video(path: str | os.PathLike) -> bool:
    """Return True if `path` names a video file by its extension (.mp4, .webm, .mov, .avi, .gif)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_fps(fps) -> float:
    """Return `fps` as a float if it is a positive finite number of frames per second; else raise NSTError."""
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise NSTError(f"the frame rate must be a positive number of frames per second, got {fps!r}")
    return float(fps)


def _reason(exc: BaseException) -> str:
    """Return the last non-empty line of an exception's message (where ffmpeg says what went wrong)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# --- reading ---------------------------------------------------------------------------------------------------------


class Frames(Sequence):
    """The frames of a clip: len(frames), frames[i] as HxWx3 float32 RGB in [0, 1], `fps`, `shape` (height, width)
    and `source`. A folder's images are read when indexed; a video file's are decoded once and kept as uint8."""

    def __init__(
        self,
        source: Path,
        fps: float,
        shape: tuple[int, int],
        files: Sequence[Path] = (),
        pixels: Sequence[np.ndarray] = (),
    ):
        self.source, self.fps, self.shape = source, fps, shape
        self.files, self._pixels = tuple(files), tuple(pixels)

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.files) or len(self._pixels)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index):
        """Return frame `index` as HxWx3 float32 in [0, 1] (a list of them for a slice)."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self.files:
            path = self.files[index]
            image = load_image(path)
            if image.shape[:2] != self.shape:
                raise NSTError(f"frame {path} is {_size(image.shape)}, not {_size(self.shape)} like the first frame")
            return image
        return self._pixels[index].astype(np.float32) / np.float32(255.0)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Return an iterator over the frames, first to last."""
        return (self[i] for i in range(len(self)))


def _size(shape: tuple[int, ...]) -> str:
    """Return an image shape's size as WIDTHxHEIGHT."""
    return f"{shape[1]}x{shape[0]}"


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """Return the image files (.png, .jpg, .jpeg, .webp; not hidden) in `folder`, in natural order of their names;
    raise NSTError if there are none."""
    p = Path(folder)
    found = [f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES and not f.name.startswith(".")]
    files = sorted((f for f in found if f.is_file()), key=lambda f: natural_key(f.name))
    if not files:
        raise NSTError(f"folder {p} has no frames: no {', '.join(FRAME_SUFFIXES)} files in it")
    return files


def _upright_size(path: Path) -> tuple[int, int]:
    """Return (height, width) of the image at `path` as load_image gives it (EXIF rotation applied), from its header."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
    except (UnidentifiedImageError, OSError) as exc:
        raise NSTError(f"cannot read frame {path}: {_reason(exc)}") from None
    return (w, h) if turned else (h, w)


def _read_folder(folder: Path, fps: float) -> Frames:
    """Return the frames of a folder of images (read when indexed), all checked to have one size."""
    files = frame_files(folder)
    shape = _upright_size(files[0])
    for f in files[1:]:
        other = _upright_size(f)
        if other != shape:
            raise NSTError(f"frames differ in size: {f} is {_size(other)}, {files[0]} is {_size(shape)}")
    return Frames(folder, fps, shape, files=files)


def _gif_fps(durations_ms: Sequence[float], default: float) -> float:
    """Return a GIF's frame rate: its frame count over the sum of its durations (`default` when they are 0)."""
    total = float(sum(d or 0 for d in durations_ms))
    return len(durations_ms) * 1000.0 / total if total > 0 else default


def _check_memory(path: Path, frames: float, width: int, height: int) -> None:
    """Return None if `frames` uint8 frames of width x height fit in the available memory; else raise NSTError."""
    need = frames * width * height * 3
    free = host.available_bytes()
    if need > free * host.SAFETY:
        raise NSTError(
            f"{path}: about {frames:.0f} frames of {width}x{height} need {need / 2**30:.1f} GiB to decode but only "
            f"{free / 2**30:.1f} GiB is free; cut the clip or scale it down first"
        )


def _decode(path: Path, default_fps: float) -> tuple[list[np.ndarray], float]:
    """Return (uint8 HxWx3 frames, frame rate) of a video file, decoded by imageio (Pillow for GIF, else ffmpeg)."""
    iio = require_video("imageio.v3")
    if path.suffix.lower() == ".gif":
        with iio.imopen(path, "r", plugin="pillow") as f:
            count = f.properties(index=...).shape[0]
            durations = [f.metadata(index=i, exclude_applied=False).get("duration", 0) for i in range(count)]
            height, width = f.properties(index=0).shape[:2]
            _check_memory(path, count, width, height)
            pixels = [np.asarray(frame)[..., :3] for frame in f.iter(mode="RGB")]
        return pixels, _gif_fps(durations, default_fps)
    require_video("imageio_ffmpeg")  # imageio's ffmpeg plugin needs it: without it, say which extra to install
    meta = iio.immeta(path, plugin="FFMPEG")
    fps = float(meta.get("fps") or 0) or default_fps
    width, height = meta.get("size", (0, 0))
    duration = meta.get("duration") or 0
    if math.isfinite(duration) and duration > 0:
        _check_memory(path, duration * fps, width, height)
    with iio.imopen(path, "r", plugin="FFMPEG") as f:
        pixels = [np.asarray(frame)[..., :3] for frame in f.iter()]
    return pixels, fps


def _read_video(path: Path, default_fps: float) -> Frames:
    """Return the frames of a video file, decoded into memory; raise NSTError (one line) if it cannot be read."""
    if path.stat().st_size == 0:
        raise NSTError(f"video {path} is empty (0 bytes)")
    try:
        pixels, fps = _decode(path, default_fps)
    except NSTError:
        raise
    except Exception as exc:  # noqa: BLE001 (imageio and ffmpeg fail in many ways: each is "cannot read this file")
        raise NSTError(f"cannot read video {path}: {_reason(exc)}") from None
    if not pixels:
        raise NSTError(f"video {path} has no frames")
    return Frames(path, fps, pixels[0].shape[:2], pixels=pixels)


def read_frames(source: str | os.PathLike, fps: float = DEFAULT_FPS) -> tuple[Frames, float]:
    """Return (frames, frame rate) of a folder of images or a video file; `fps` is the rate of a folder (and of a
    video whose metadata has none). Raise NSTError, one line, for a missing path, an empty folder, frames of
    different sizes, or a file that is not a readable video."""
    p = Path(source)
    fps = check_fps(fps)
    if not p.exists():
        raise NSTError(f"{p} does not exist: give a folder of frames or a video file ({', '.join(VIDEO_SUFFIXES)})")
    if p.is_dir():
        frames = _read_folder(p, fps)
    elif is_video(p):
        frames = _read_video(p, fps)
    else:
        raise NSTError(f"{p} is not a folder of frames or a video file ({', '.join(VIDEO_SUFFIXES)})")
    return frames, frames.fps


def video_fps(source: str | os.PathLike, default: float = DEFAULT_FPS) -> float:
    """Return the frame rate of a video file from its metadata (a GIF's from its frame durations), without decoding
    its frames; `default` for a folder."""
    p = Path(source)
    if p.is_dir():
        return check_fps(default)
    try:
        iio = require_video("imageio.v3")
        if p.suffix.lower() == ".gif":
            with iio.imopen(p, "r", plugin="pillow") as f:
                count = f.properties(index=...).shape[0]
                return _gif_fps([f.metadata(index=i).get("duration", 0) for i in range(count)], default)
        require_video("imageio_ffmpeg")
        return float(iio.immeta(p, plugin="FFMPEG").get("fps") or 0) or default
    except NSTError:
        raise
    except Exception as exc:  # noqa: BLE001 (as in _read_video)
        raise NSTError(f"cannot read video {p}: {_reason(exc)}") from None


# --- writing ---------------------------------------------------------------------------------------------------------


def _even(frame: np.ndarray) -> np.ndarray:
    """Return an HxWx3 frame padded to an even height and width by repeating its last row or column."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def _uint8_frames(frames: Iterable[np.ndarray], pad_even: bool) -> Iterator[np.ndarray]:
    """Return an iterator of the frames as contiguous HxWx3 uint8 (padded to even sizes if asked), checking that they
    all have the first one's size."""
    first = None
    for i, frame in enumerate(frames):
        a = to_uint8(frame)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise NSTError(f"frame {i + 1} has shape {a.shape}, not height x width x 3 (RGB)")
        first = a.shape if first is None else first
        if a.shape != first:
            raise NSTError(f"frame {i + 1} is {_size(a.shape)}, not {_size(first)} like the first frame")
        yield np.ascontiguousarray(_even(a) if pad_even else a)


def _encode(frames: Iterable[np.ndarray], path: Path, fps: float) -> int:
    """Return the number of frames after encoding them into the video file `path` with ffmpeg (its extension says
    how: ENCODERS)."""
    ffmpeg = require_video("imageio_ffmpeg")
    suffix = path.suffix.lower()
    codec, pix_fmt, options = ENCODERS[suffix]
    writer = None
    count = 0
    try:
        for frame in _uint8_frames(frames, pad_even=suffix in EVEN_SIZE):
            if writer is None:
                writer = ffmpeg.write_frames(
                    str(path),
                    (frame.shape[1], frame.shape[0]),
                    fps=fps,
                    codec=codec,
                    pix_fmt_out=pix_fmt,
                    quality=None,
                    macro_block_size=1,
                    output_params=list(options),
                    ffmpeg_log_level="error",
                )
                writer.send(None)
            writer.send(frame)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return count


def _copy(source: Path, target: IO[bytes]) -> None:
    """Copy the bytes of file `source` into the open file `target`."""
    with source.open("rb") as f:
        shutil.copyfileobj(f, target, length=1 << 20)


def write_frames(frames: Iterable[np.ndarray], target: str | os.PathLike, fps: float) -> Path:
    """Return `target` after writing `frames` (HxWx3 floats in [0, 1], one size) there at `fps` frames per second: a
    video file if its extension is .mp4, .mov, .webm or .gif, else a folder of frame_00001.png, ... (created if need
    be; `fps` is not stored there). Each file is written atomically; raise NSTError (one line) for no frames, frames
    of different sizes, or a video extension this tool does not write."""
    p = Path(target)
    fps = check_fps(fps)
    suffix = p.suffix.lower()
    if suffix in FRAME_SUFFIXES:
        raise NSTError(f"{p} is an image name: give a folder for the frames or a video file ({', '.join(ENCODERS)})")
    if is_video(p) and suffix not in ENCODERS:
        raise NSTError(f"{p}: {suffix} videos are read but not written; write one of {', '.join(ENCODERS)}")
    if suffix not in ENCODERS:
        count = 0
        for i, frame in enumerate(frames):
            save_image(frame, frame_path(p, i))
            count += 1
        if not count:
            raise NSTError(f"no frames to write to {p}")
        return p
    with tempfile.TemporaryDirectory(prefix="nst-video-") as tmp:
        encoded = Path(tmp) / f"video{suffix}"
        try:
            count = _encode(frames, encoded, fps)
        except (OSError, RuntimeError) as exc:  # ffmpeg stopped: nothing of `target` has been touched
            raise NSTError(f"could not encode {p}: {_reason(exc)}") from None
        if not count:
            raise NSTError(f"no frames to write to {p}")
        atomic_write(p, lambda f: _copy(encoded, f))
    return p
