"""The registry of known images: resolve a name to a verified local file."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import NSTError

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


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Return the hex digest of a file with a hashlib algorithm (sha256, md5, ...)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest() if hasattr(hashlib, "file_digest") else _digest(f, algorithm)


def _digest(f, algorithm: str) -> str:
    """Return the hex digest of an open binary file, read in 1 MiB chunks (Python < 3.11)."""
    h = hashlib.new(algorithm)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file."""
    return file_hash(path, "sha256")


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
    if cached.is_file() and sha256(cached) == entry["sha256"]:
        return cached
    if not download:
        raise NSTError(f"image {name!r} is not downloaded yet; run `nst fetch` or set {DATA_DIR_ENV}")
    import pooch

    pooch.get_logger().setLevel("WARNING")  # no "Downloading data from ..." line: nst prints one line per outcome
    try:
        got = pooch.retrieve(
            entry["url"], known_hash=f"sha256:{entry['sha256']}", fname=str(name), path=cache_dir(),
            downloader=pooch.HTTPDownloader(progressbar=False, timeout=DOWNLOAD_TIMEOUT_S),
        )
    except Exception as exc:  # network errors, hash mismatch: one line for the user
        raise NSTError(
            f"could not download {name} from {entry['url']} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            f"put the file in a folder and set {DATA_DIR_ENV} to it"
        ) from exc
    return Path(got)
