"""Every file the tool writes: atomically, never over a device, FIFO, socket or folder, with a fallback copy when the
OS refuses; output paths checked before any work (writable, a name the file system holds, never the same file as an
input or another output); intermediate images every N steps; and the ledger of a run's outputs (what went where,
what failed, as one line)."""

from __future__ import annotations

import errno
import functools
import glob
import io
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from . import assets
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


NAME_MAX = 255  # the longest file name in bytes where the file system does not say (Linux, macOS, Windows)
TEMP_EXTRA = len(".") + len(".") + 8 + len(".tmp")  # what a temp name adds to the target's: .NAME.XXXXXXXX.tmp


def name_max(folder: str | os.PathLike) -> int:
    """Return the longest file name in bytes the file system of `folder` (or of its nearest existing parent) holds."""
    for f in (Path(folder), *Path(folder).parents):
        try:
            limit = os.pathconf(f, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):  # no such folder yet, or no pathconf (Windows)
            continue
        return limit if limit > 0 else NAME_MAX
    return NAME_MAX


def fitted_name(name: str, limit: int) -> str:
    """Return `name` cut to at most `limit` bytes (its extension kept, never half a UTF-8 character): `name` if it
    fits."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    suffix = os.fsencode(Path(name).suffix)
    suffix = suffix if len(suffix) <= limit // 2 else b""
    cut = max(limit - len(suffix), 0)
    while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: cut before its character
        cut -= 1
    return os.fsdecode(raw[:cut] + suffix)


def name_too_long(path: str | os.PathLike) -> str:
    """Return why the file system cannot hold `path`: its name, or a folder's on the way, longer than a file name
    may be there ("" if it can)."""
    p = Path(path)
    limit = name_max(p.parent)
    for part in reversed(p.parts):
        size = len(os.fsencode(part))
        if size > limit:
            what = "its name" if part == p.name else f"the folder name {part[:24]}... in it"
            return f"{what} is {size} bytes, over the {limit} bytes a file name may have there"
    return ""


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
    short = fitted_name(target.name, name_max(target.parent) - TEMP_EXTRA)  # the temp name always fits
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.", suffix=".tmp", dir=target.parent)
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
        kept = _replace(fallback_dir() / fitted_name(p.name, name_max(fallback_dir())), write)
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
    symlink) that is not a regular file, a name longer than its file system holds, an image output (`image=True`)
    whose extension is not a format Pillow writes, a folder that cannot be created or written to.
    """
    p = Path(path)
    too_long = name_too_long(p)
    if too_long:
        raise NSTError(f"cannot write {p}: {too_long}; choose a shorter {flag}")
    try:
        if p.is_dir() and not p.is_symlink():
            raise NSTError(f"output {p} is a directory; give a file name such as {p / 'result.png'}")
        target = write_target(p)
    except NotARegularFile as exc:
        raise NSTError(f"cannot write {p}: {exc.reason}; choose another {flag}") from None
    except OSError as exc:  # a folder on the way not searchable, a path longer than the OS takes, a loop
        raise NSTError(f"cannot write {p}: {_reason(exc)}; choose another {flag}") from None
    too_long = name_too_long(target)  # where a symlink points
    if too_long:
        raise NSTError(f"cannot write {p}: {too_long}; choose a shorter {flag}")
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


# --- outputs that are inputs ----------------------------------------------------------------------------------------

RESUMED = "the checkpoint resumed from"  # the input label of a resumed run's checkpoint (input_files)


def file_identity(path: str | os.PathLike) -> tuple:
    """Return the file `path` names: ("inode", device, inode) where it exists, so a symlink, `./x` and a hard link
    give the same; else ("path", its resolved real path)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def input_file(source) -> Path | None:
    """Return the file an image input is read from: a path, or a registry name's local copy (where a download would
    put it when there is none yet); None for an array."""
    if not isinstance(source, str | os.PathLike):
        return None
    try:
        return assets.image_path(source, download=False)
    except NSTError:  # not downloaded yet, or no such file (the run says so)
        return assets.cache_dir() / str(source) if str(source) in assets.known_images() else Path(source)


def input_files(
    content=None, style=None, style_mask=None, init_image=None, resume=None, weights=None
) -> dict[str, Path]:
    """Return {what: file} for each input of a run that is a file (paths and registry names; the default images
    where content or style is None, unless resuming): the files no output may be (check_aliases)."""
    if resume is None:
        default_content, default_style = assets.default_images()
        content = default_content if content is None else content
        style = default_style if style is None else style
    styles = list(style) if isinstance(style, list | tuple) else [style]
    sources = {"the content image": content}
    sources |= {("the style image" if len(styles) == 1 else f"style image {i + 1}"): s for i, s in enumerate(styles)}
    sources |= {"the style mask": style_mask, "the init image": init_image}
    found = {what: input_file(source) for what, source in sources.items()}
    if resume is not None:
        found[RESUMED] = Path(resume)
    explicit = weights or os.environ.get(assets.WEIGHTS_ENV)
    found["the VGG19 weights"] = Path(explicit) if explicit else assets.keras_cache() / assets.WEIGHTS_FILE
    return {what: path for what, path in found.items() if path is not None}


def check_aliases(
    outputs: dict[str, str | os.PathLike] | list[tuple[str, str | os.PathLike]],
    inputs: dict[str, str | os.PathLike],
    may_replace: dict[str, str] | None = None,
) -> None:
    """Return None if no output is the same file (file_identity) as an input or as another output; else raise
    NSTError, one line naming both.

    `outputs` and `inputs` are {label: path} (outputs may be (label, path) pairs); `may_replace` {output label: input
    label} allows one pair: a resumed run's checkpoint, read whole before it is written again (atomically).
    """
    allowed = may_replace or {}
    seen: dict[tuple, list[tuple[str, Path, bool]]] = {}
    for what, path in inputs.items():
        seen.setdefault(file_identity(path), []).append((what, Path(path), True))
    for what, path in outputs.items() if isinstance(outputs, dict) else outputs:
        key = file_identity(path)
        for other, other_path, is_input in seen.get(key, []):
            if is_input and allowed.get(what) != other:
                raise NSTError(
                    f"{what} {path} is the same file as {other} {other_path}: writing it would destroy the input; "
                    f"choose another {what}"
                )
            if not is_input:
                raise NSTError(
                    f"{what} {path} is the same file as {other} {other_path}: one would overwrite the other; "
                    f"choose another {what}"
                )
        seen.setdefault(key, []).append((what, Path(path), False))


# --- a run's outputs -----------------------------------------------------------------------------------------------


def intermediate_path(output: str | os.PathLike, step: int) -> Path:
    """Return the path of the image saved at `step` next to `output` (out.png -> out_0010.png)."""
    p = Path(output)
    return p.with_name(f"{p.stem}_{step:04d}{p.suffix or '.png'}")


def check_every(every) -> int:
    """Return `every` (save_every, steps between intermediate images) if it is a positive integer; else raise
    NSTError."""
    if not isinstance(every, int) or isinstance(every, bool) or every <= 0:
        raise NSTError(f"save_every must be a positive integer, got {every!r}")
    return every


def in_series(path: str | os.PathLike, output: str | os.PathLike, every: int) -> bool:
    """Return True if `path` resolves to an image `save_every=every` would write beside `output` (out_0010.png, ...)."""
    first = intermediate_path(output, 0)
    folder = Path(os.path.realpath(first.parent))
    pattern = re.escape(Path(output).stem) + r"_(\d{4,})" + re.escape(first.suffix)
    for real in (Path(os.path.realpath(Path(path).parent)) / Path(path).name, Path(os.path.realpath(path))):
        found = re.fullmatch(pattern, real.name) if real.parent == folder else None  # the path, or where it leads
        if found and found[1] == f"{int(found[1]):04d}" and int(found[1]) > 0 and int(found[1]) % every == 0:
            return True
    return False


def series_on_disk(output: str | os.PathLike, every: int) -> list[Path]:
    """Return the files already where `save_every=every` would write beside `output` (a previous run's images)."""
    first = intermediate_path(output, 0)
    pattern = f"{glob.escape(Path(output).stem)}_[0-9][0-9][0-9][0-9]*{glob.escape(first.suffix)}"
    try:
        found = sorted(first.parent.glob(pattern))
    except OSError:  # a folder that cannot be there (a name too long): check_output says so
        return []
    return [p for p in found if in_series(first.parent / p.name, output, every)]


def check_outputs(
    *,
    output: str | os.PathLike | None = None,
    save_every: int | None = None,
    plot: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    flags: dict[str, str] | None = None,
    inputs: dict[str, Path] | None = None,
    steps: int | None = None,
) -> None:
    """Return None if every file a run would write can be written without destroying another; else raise NSTError
    naming the first that can't.

    Checked before any work (check_output): the result, the plot, the checkpoint, a log, the `--save-every` images'
    names (as long as at step `steps`, if given) and the files already where they would go; then that none of them
    is the same file as one of `inputs` (input_files) or as another output (check_aliases). `flags` names each
    option in the message (default: the keyword).
    """
    names = flags or {}
    label = {k: names.get(k, f"{k}=") for k in ("output", "plot", "checkpoint", "log", "save_every")}
    written = {"output": output, "checkpoint": checkpoint, "plot": plot, "log": log}
    outs = [(label[key], Path(path)) for key, path in written.items() if path is not None]
    ins = inputs or {}
    series: list[Path] = []
    if save_every is not None and output is not None:
        check_every(save_every)
        series = series_on_disk(output, save_every)
        others = [p for p in (*ins.values(), *(p for _, p in outs)) if in_series(p, output, save_every)]
        outs += [(label["save_every"], p) for p in (*series, *others)]  # an input or output where one would go
    check_aliases(outs, ins, may_replace={label["checkpoint"]: RESUMED})  # first: a refusal makes no folder
    for key, path in written.items():
        if path is not None:
            check_output(path, image=key in ("output", "plot"), flag=label[key])
    if save_every is not None and output is not None:
        last = intermediate_path(output, max(steps if isinstance(steps, int) else 0, 1))
        too_long = name_too_long(last)
        if too_long:
            every = f"an image every {save_every} steps"
            raise NSTError(f"cannot write {last} ({every}): {too_long}; choose a shorter {label['output']}")
        for path in series:  # images a previous run left: a FIFO among them is never replaced
            check_output(path, flag=label["save_every"])


class SaveEvery:
    """A stylize callback that writes the current image every `every` steps next to `output`, atomically."""

    def __init__(self, every: int, output: str | os.PathLike):
        self.every, self.output = check_every(every), Path(output)
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
