"""Every file the tool writes: atomically, never over a device, FIFO, socket or folder, with a fallback copy when the
OS refuses; output paths checked before any work; intermediate images every N steps; and the ledger of a run's
outputs (what went where, what failed, as one line)."""

from __future__ import annotations

import errno
import functools
import glob
import io
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from .config import NSTError
from .images import to_uint8

# --- writing one file ----------------------------------------------------------------------------------------------


class WriteError(NSTError):
    """A file could not be written where asked: `path`, the OS's `reason`, and where its content went instead."""

    def __init__(self, path: Path, reason: str, kept: Path | None, kept_reason: str = ""):
        self.path, self.reason, self.kept, self.kept_reason = path, reason, kept, kept_reason
        instead = (
            f"wrote it to {kept} instead"
            if kept
            else f"no copy could be kept in {fallback_root()} either ({kept_reason})"
        )
        super().__init__(f"could not write {path}: {reason}; {instead}")


def fallback_root() -> Path:
    """Return the folder whose subfolders keep files that could not be written where asked (the system temp folder)."""
    return Path(tempfile.gettempdir())


@functools.cache
def fallback_dir() -> Path:
    """Return this process's folder for files that could not be written where asked (made on first use)."""
    return Path(tempfile.mkdtemp(prefix="nst-kept-", dir=fallback_root()))


def _reason(exc: OSError) -> str:
    """Return the OS's one-line reason for a failed write (`No space left on device`)."""
    text = str(exc)
    return exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)


class NotARegularFile(OSError):
    """An output path that must not be replaced: a device, FIFO, socket, directory, or a link to nothing."""

    def __init__(self, reason: str, path: Path):
        super().__init__(errno.EEXIST, reason, str(path))
        self.reason = reason


def _kind(st: os.stat_result) -> str:
    """Return what a file that is not a regular file is, in words ("a directory", "a FIFO", ...)."""
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(st.st_mode):
            return what
    return "not a regular file"


def write_target(path: str | os.PathLike) -> Path:
    """Return the file a write to `path` replaces: `path`, or the file a symlink points to (the link is kept, as
    `cp` does).

    Raise NotARegularFile if that exists and is not a regular file (a device, FIFO, socket or directory is never
    replaced), or if a folder on the way is a symlink to nothing.
    """
    p = Path(path)
    for folder in reversed(p.parents):
        if folder.is_symlink() and not folder.exists():
            raise NotARegularFile(f"its folder {folder} is a symlink to {os.readlink(folder)}, which does not exist", p)
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    if target.is_symlink():  # still a link after resolving: a loop
        raise NotARegularFile("it is a symlink loop", p)
    try:
        st = target.stat()
    except FileNotFoundError:
        return target
    except NotADirectoryError:
        return target  # a file where a folder should be: the write says so
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(
            f"{'it' if target == p else f'its target {target}'} is {_kind(st)}, not a regular file", p
        )
    return target


def _replace(p: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Return `p` after `write(file)` filled a temp file beside its target that then replaced the target (one
    rename)."""
    target = write_target(p)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder should be: say so rather than "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target.parent)) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        write_target(p)  # nothing took the target's place while we wrote (a FIFO made meanwhile is never replaced)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Return `path` after `write(file)` filled a temp file beside it that then replaced `path` in one rename.

    Every file the tool writes goes through here. If the OS refuses (disk full, read-only, a file where a folder
    should be), the temp file is removed, `path` is left as it was, the same content is written to `fallback_dir()`
    instead, and WriteError says both (one line).
    """
    p = Path(path)
    try:
        return _replace(p, write)
    except OSError as exc:
        reason = _reason(exc)
    try:
        kept = _replace(fallback_dir() / p.name, write)
    except OSError as exc:
        raise WriteError(p, reason, None, _reason(exc)) from None
    raise WriteError(p, reason, kept)


@functools.cache
def writable_formats() -> dict[str, str]:
    """Return {extension: Pillow format} for every extension whose format Pillow writes an RGB image in."""
    Image.init()
    works: dict[str, bool] = {}
    for fmt in sorted(set(Image.registered_extensions().values()) & set(Image.SAVE)):
        try:  # a 16x16 RGB image, as the tool writes them; some formats need other modes or libraries
            Image.new("RGB", (16, 16), (200, 100, 50)).save(io.BytesIO(), format=fmt)
            works[fmt] = True
        except Exception:  # noqa: BLE001 (any failure means: not a format for our outputs)
            works[fmt] = False
    return {ext: fmt for ext, fmt in sorted(Image.registered_extensions().items()) if works.get(fmt)}


def image_format(path: str | os.PathLike) -> str:
    """Return the Pillow format for a file name's extension (PNG when it has none); raise NSTError if Pillow cannot
    write it."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    formats = writable_formats()
    if suffix not in formats:
        common = [e for e in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif") if e in formats]
        others = [e for e in formats if e not in common]
        raise NSTError(
            f"{path}: {suffix} is not an image format Pillow writes; use one of {', '.join(common)} "
            f"(or {', '.join(others)})"
        )
    return formats[suffix]


def check_output(path: str | os.PathLike, *, image: bool = True, flag: str = "output path") -> Path:
    """Return `path` after checking, before any work, that a result can be written there; raise NSTError if not.

    Refused, with one line naming `path` and ending "choose another `flag`": an existing target (after following a
    symlink) that is not a regular file, an image output (`image=True`) whose extension is not a format Pillow
    writes, a folder that cannot be created or written to.
    """
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        raise NSTError(f"output {p} is a directory; give a file name such as {p / 'result.png'}")
    try:
        target = write_target(p)
    except NotARegularFile as exc:
        raise NSTError(f"cannot write {p}: {exc.reason}; choose another {flag}") from None
    if image:
        image_format(p)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".nst-write-check-"):
            pass
    except OSError as exc:
        blocker = next((a for a in target.parents if a.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise NSTError(f"cannot write {p}: {blocker} is a file, not a folder; choose another {flag}") from exc
        raise NSTError(f"cannot write to {target.parent} ({exc.strerror or exc}); choose another {flag}") from exc
    return p


def save_image(image: np.ndarray | Image.Image, path: str | os.PathLike) -> Path:
    """Return `path` after writing `image` ([0, 1] floats, or a PIL image) there atomically, in its extension's
    format."""
    fmt = image_format(path)
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    if pil.mode not in ("RGB", "L") and fmt not in ("PNG", "WEBP", "TIFF", "GIF"):
        pil = pil.convert("RGB")  # a figure's RGBA for formats without alpha (JPEG, BMP, ...)
    return atomic_write(path, lambda f: pil.save(f, format=fmt, **extra))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Return `path` after writing `text` there atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))


# --- a run's outputs -----------------------------------------------------------------------------------------------


def intermediate_path(output: str | os.PathLike, step: int) -> Path:
    """Return the path of the image saved at `step` next to `output` (out.png -> out_0010.png)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_{step:04d}{p.suffix or '.png'}")


def check_outputs(
    *,
    output: str | os.PathLike | None = None,
    save_every: int | None = None,
    plot: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    flags: dict[str, str] | None = None,
) -> None:
    """Return None if every file a run would write can be written; else raise NSTError naming the first that can't.

    Checked before any work (images.check_output): the result, the plot, the checkpoint, a log, and the existing
    `--save-every` images beside the output. `flags` names each option in the message (default: the keyword).
    """
    names = flags or {}
    for key, path, image in (
        ("output", output, True),
        ("plot", plot, True),
        ("checkpoint", checkpoint, False),
        ("log", log, False),
    ):
        if path is not None:
            check_output(path, image=image, flag=names.get(key, f"{key}="))
    if save_every is not None and output is not None:
        first = intermediate_path(output, 0)
        pattern = glob.escape(str(first)).replace("0000", "[0-9][0-9][0-9][0-9]*")
        for path in sorted(glob.glob(pattern)):  # images a previous run left: a FIFO among them is never replaced
            check_output(path, flag=names.get("save_every", "save_every="))


class SaveEvery:
    """A stylize callback that writes the current image every `every` steps next to `output`, atomically."""

    def __init__(self, every: int, output: str | os.PathLike):
        if not isinstance(every, int) or isinstance(every, bool) or every <= 0:
            raise NSTError(f"save_every must be a positive integer, got {every!r}")
        self.every, self.output = every, Path(output)
        self.written: list[Path] = []

    def __call__(self, step: int, image: np.ndarray, terms: dict) -> None:
        """Save `image` if `step` is a multiple of `every`; never asks to stop."""
        if step % self.every == 0:
            self.written.append(save_image(image, intermediate_path(self.output, step)))


def chain(*callbacks: Callable | None, to_result: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable | None:
    """Return one callback calling each given one in turn on to_result(image) (the image as the user gets it, e.g.
    with the content's chroma put back), True if any asks to stop; None if there are none."""
    cbs = [c for c in callbacks if c is not None]
    if not cbs:
        return None
    if len(cbs) == 1 and to_result is None:
        return cbs[0]

    def each(step: int, image: np.ndarray, terms: dict) -> bool:
        """Return True if any callback asks to stop."""
        img = to_result(image) if to_result is not None else image
        return any([bool(c(step, img, terms)) for c in cbs])

    return each


RESUME_FROM = "the checkpoint to resume from"  # the label stylize gives the checkpoint it writes


@dataclass
class Writes:
    """A run's output files: each is tried even after another failed, and any failures read as one line."""

    failed: list[WriteError] = field(default_factory=list)
    where: dict[str, Path | None] = field(default_factory=dict)  # "the result" -> where it went; None: nowhere
    lost: dict[str, str] = field(default_factory=dict)  # what went nowhere -> why its fallback copy failed too
    note: str = ""  # how the run ended, when not by finishing ("interrupted; ...", "stopped after step 5")

    def __call__(self, what: str, write: Callable[..., Path], *args) -> Path | None:
        """Return where `write(*args)` put `what`: the path asked for, a fallback copy, or None (failure recorded)."""
        try:
            path = write(*args)
        except WriteError as exc:
            self.failed.append(exc)
            path = exc.kept
            if path is None:
                self.lost[what] = exc.kept_reason
        self.where[what] = path
        return path

    def message(self) -> str:
        """Return one line: the note and, after a failure, what could not be written, why, and where each output is."""
        ckpt = self.where.get(RESUME_FROM)
        if not self.failed:
            return f"{self.note} and wrote checkpoint {ckpt} (continue with resume / --resume)" if ckpt else self.note
        reasons = {e.reason for e in self.failed}
        paths = ", ".join(str(e.path) if len(reasons) == 1 else f"{e.path} ({e.reason})" for e in self.failed)
        parts = [f"could not write {paths}" + (f": {reasons.pop()}" if len(reasons) == 1 else "")]
        parts += [self.note] if self.note else []
        parts.append(
            ", ".join(
                f"{what} is in {path}" if path else f"{what} could not be written anywhere ({self.lost[what]})"
                for what, path in self.where.items()
            )
        )
        return "; ".join(p for p in parts if p)
