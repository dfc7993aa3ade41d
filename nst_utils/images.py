"""Images: load any common format as RGB floats, resize, VGG preprocessing and its inverse, colour preservation,
atomic save."""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import IO, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import assets, host
from .config import NSTError

# VGG19 was trained on BGR images in 0..255 with these per-channel means subtracted.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
MAX_PIXELS = 120_000_000  # refuse rasters beyond this before decoding them (decompression bombs)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Return an 8-bit RGB version of any PIL image (alpha composited on white, 16-bit rescaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = max(float(a.max(initial=0)), 1.0) if a.max(initial=0) > 1 else 1.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def check_raster(path: str | os.PathLike, img: Image.Image) -> None:
    """Return None if decoding `img` (header read, raster not yet) is safe, else raise NSTError saying why not."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise NSTError(f"{path} is {w}x{h} = {w * h:,} pixels, over the {MAX_PIXELS:,} this tool decodes safely "
                       f"(a huge image or a decompression bomb); downscale it first")
    bands = max(len(img.getbands()), 3)
    sample = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
    need = w * h * (2 * bands * sample + (8 if sample > 1 else 0) + 6)  # raster, a converted copy, RGB result
    free = host.available_bytes()
    if need > free * host.SAFETY:
        raise NSTError(f"{path} ({w}x{h}) needs about {need / 2**30:.1f} GiB to decode but only {free / 2**30:.1f} GiB "
                       f"is free; downscale it first or free memory")


def load_image(path: str | os.PathLike, max_size: int | None = None) -> np.ndarray:
    """Return the image at `path` as float32 HxWx3 RGB in [0, 1], upright, long side at most `max_size`."""
    p = Path(path)
    if p.is_dir():
        raise NSTError(f"{p} is a directory, not an image file")
    if not p.exists():
        raise NSTError(f"image {p} does not exist")
    if p.is_file() and p.stat().st_size == 0:  # a FIFO's size reads 0 too: it is read like a file
        raise NSTError(f"image {p} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # Image.open only reads the header; we check the size ourselves below
            try:
                with Image.open(p) as img:
                    img.seek(0)  # first frame of animations
                    if max_size and img.format == "JPEG":
                        img.draft("RGB", (max_size, max_size))  # decode at reduced size, cheap for huge JPEGs
                    check_raster(p, img)  # before anything is decoded
                    img = ImageOps.exif_transpose(img)
                    img.load()
                    rgb = _to_rgb(img)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NSTError(f"{p} is too large to decode safely (over {MAX_PIXELS:,} pixels); downscale it first") from exc
    except UnidentifiedImageError as exc:
        raise NSTError(f"{p} is not an image Pillow can read (corrupt, or not an image at all)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise NSTError(f"{p} could not be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); the file is truncated or corrupt") from exc
    if max_size:
        rgb = resize_pil(rgb, max_size)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def fit_long_side(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Return (height, width) scaled so the long side is `size`, keeping the aspect ratio."""
    h, w = shape
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Return a PIL image resized (Lanczos) so its long side is `size`."""
    h, w = fit_long_side((img.height, img.width), size)
    return img.resize((w, h), Image.Resampling.LANCZOS) if (h, w) != (img.height, img.width) else img


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Return an HxWx3 float image resized to long side `size`, or to exactly (height, width)."""
    hw = fit_long_side(image.shape[:2], size) if isinstance(size, int) else tuple(size)
    if hw == image.shape[:2]:
        return image.astype(np.float32)
    chans = [Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(hw[::-1], Image.Resampling.LANCZOS)
             for c in range(image.shape[-1])]
    return np.clip(np.stack([np.asarray(c) for c in chans], -1), 0.0, 1.0).astype(np.float32)


def as_image(source, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Return an HxWx3 float32 image in [0, 1] from a path, registry name or array (NumPy or a tensor), resized if asked."""
    array = isinstance(source, np.ndarray) or hasattr(source, "numpy")  # a TensorFlow tensor, without importing TF
    if array:
        img = np.asarray(source, dtype=np.float32)
        if img.ndim == 4 and img.shape[0] == 1:
            img = img[0]
        if img.ndim != 3 or img.shape[-1] != 3:
            raise NSTError(f"an image array must be HxWx3, got shape {img.shape}")
        if not np.isfinite(img).all():
            raise NSTError("an image array contains NaN or infinite values; pass RGB floats in [0, 1]")
        img = np.clip(img, 0.0, 1.0)
    else:
        img = load_image(assets.image_path(source), max_size=size if isinstance(size, int) else None)
    if size is not None:
        img = resize(img, size)
    if min(img.shape[:2]) < 16:
        name = "" if array else f"{source} "  # tiny images are upscaled; thin ones refused
        raise NSTError(f"image {name}is {img.shape[1]}x{img.shape[0]} px after resizing: too thin for VGG19, which needs "
                       f"at least 16 px per side; crop it to a less elongated shape or use a larger --size")
    return img


def preprocess(image):
    """Return VGG19 input (BGR, 0..255, ImageNet mean removed) from RGB floats in [0, 1]; works on NumPy or TF."""
    return image[..., ::-1] * 255.0 - VGG_MEAN_BGR


def deprocess(x):
    """Return RGB floats in [0, 1] scale from VGG19 input; the exact inverse of `preprocess` (no clipping)."""
    return (x + VGG_MEAN_BGR)[..., ::-1] / 255.0


# --- colour preservation (Gatys et al. 2016, "Controlling Perceptual Factors") -----------------------------------

# NTSC YIQ: Y is luminance, I and Q carry the chroma.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]], dtype=np.float64)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(image: np.ndarray) -> np.ndarray:
    """Return the HxWx3 YIQ version of an RGB image in [0, 1]."""
    return (np.asarray(image, np.float64) @ RGB_TO_YIQ.T).astype(np.float32)


def yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    """Return RGB (clipped to [0, 1]) from an HxWx3 YIQ image."""
    return np.clip(np.asarray(yiq, np.float64) @ YIQ_TO_RGB.T, 0.0, 1.0).astype(np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """Return the HxW luminance (Y of YIQ) of an RGB image."""
    return (np.asarray(image, np.float64) @ RGB_TO_YIQ[0]).astype(np.float32)


def gray(image: np.ndarray) -> np.ndarray:
    """Return the luminance of an RGB image repeated into three channels (what VGG19 sees in luminance mode)."""
    return np.repeat(np.clip(luminance(image), 0.0, 1.0)[..., None], 3, axis=-1)


def match_luminance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return the style's gray image with its luminance mean and standard deviation matched to the content's."""
    ys, yc = luminance(style), luminance(content)
    y = (ys - ys.mean()) * (yc.std() / max(float(ys.std()), 1e-6)) + yc.mean()
    return np.repeat(np.clip(y, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def transfer_luminance(styled: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return an RGB image with the luminance of `styled` and the chroma (I, Q) of `content`."""
    yiq = rgb_to_yiq(content)
    yiq[..., 0] = luminance(styled)
    return yiq_to_rgb(yiq)


def _colour_sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Return the symmetric square root (or inverse square root) of a covariance matrix."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-8)
    return (vecs * (vals ** (-0.5 if inverse else 0.5))) @ vecs.T


def colour_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the (3,) mean and (3, 3) covariance of an RGB image's pixels."""
    px = np.asarray(image, np.float64).reshape(-1, 3)
    return px.mean(0), np.cov(px, rowvar=False)


def match_colour(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return `source` recoloured by x -> A(x - mu_s) + mu_t, A = cov_t^1/2 cov_s^-1/2, so its colour mean and covariance match `target`'s."""
    mu_s, cov_s = colour_stats(source)
    mu_t, cov_t = colour_stats(target)
    a = _colour_sqrtm(cov_t) @ _colour_sqrtm(cov_s, inverse=True)
    px = (np.asarray(source, np.float64).reshape(-1, 3) - mu_s) @ a.T + mu_t
    return np.clip(px.reshape(source.shape), 0.0, 1.0).astype(np.float32)


def prepare_colours(mode: str | None, content: np.ndarray, styles: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return (content, styles) as the optimisation should see them for colour mode `mode` (None: unchanged)."""
    if mode is None:
        return content, styles
    if mode == "luminance":
        return gray(content), [match_luminance(s, content) for s in styles]
    if mode == "histogram":
        return content, [match_colour(s, content) for s in styles]
    raise ValueError(f"unknown colour mode {mode!r}")


def restore_colours(mode: str | None, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Return the output image for colour mode `mode`: in luminance mode the content's chroma is put back."""
    return transfer_luminance(image, content) if mode == "luminance" else image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 array from floats in [0, 1] (clipped, rounded)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 4:
        a = a[0]
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class WriteError(NSTError):
    """A file could not be written where asked: `path`, the OS's `reason`, and where its content went instead."""

    def __init__(self, path: Path, reason: str, kept: Path | None, kept_reason: str = ""):
        self.path, self.reason, self.kept, self.kept_reason = path, reason, kept, kept_reason
        instead = f"wrote it to {kept} instead" if kept else f"no copy could be kept in {fallback_root()} either ({kept_reason})"
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
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(st.st_mode):
            return what
    return "not a regular file"


def write_target(path: str | os.PathLike) -> Path:
    """Return the file a write to `path` replaces: `path`, or the file a symlink points to (the link is kept, as `cp` does).

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
        raise NotARegularFile(f"{'it' if target == p else f'its target {target}'} is {_kind(st)}, not a regular file", p)
    return target


def _replace(p: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Return `p` after `write(file)` filled a temp file beside its target that then replaced the target in one rename."""
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
    """Return the Pillow format for a file name's extension (PNG when it has none); raise NSTError if Pillow can't write it."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "PNG"
    formats = writable_formats()
    if suffix not in formats:
        common = [e for e in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif") if e in formats]
        others = [e for e in formats if e not in common]
        raise NSTError(f"{path}: {suffix} is not an image format Pillow writes; use one of {', '.join(common)} "
                       f"(or {', '.join(others)})")
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
    """Return `path` after writing `image` ([0, 1] floats, or a PIL image) there atomically, in its extension's format."""
    fmt = image_format(path)
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    if pil.mode not in ("RGB", "L") and fmt not in ("PNG", "WEBP", "TIFF", "GIF"):
        pil = pil.convert("RGB")  # a figure's RGBA for formats without alpha (JPEG, BMP, ...)
    return atomic_write(path, lambda f: pil.save(f, format=fmt, **extra))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Return `path` after writing `text` there atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))
