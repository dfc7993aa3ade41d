"""Image loading across formats and modes, resizing, VGG preprocessing, atomic saving."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from nst_utils import NSTError, deprocess, load_image, preprocess, save_image
from nst_utils.images import fit_long_side, resize


def test_preprocess_deprocess_round_trip():
    img = np.random.default_rng(0).uniform(size=(5, 6, 3)).astype(np.float32)
    x = preprocess(img)
    # BGR order, 0..255, ImageNet mean removed
    np.testing.assert_allclose(x[..., 0], img[..., 2] * 255 - 103.939, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(deprocess(x), img, atol=1e-5)


def test_fit_long_side():
    assert fit_long_side((498, 960), 512) == (266, 512)
    assert fit_long_side((600, 468), 300) == (300, 234)


def gradient_rgb(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.mark.parametrize(
    "fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif"), ("GIF", "gif")]
)
def test_loads_common_formats(tmp_path, fmt, ext):
    arr = gradient_rgb()
    path = tmp_path / f"img.{ext}"
    Image.fromarray(arr).save(path, format=fmt)
    img = load_image(path)
    assert img.shape == (40, 60, 3) and img.dtype == np.float32
    assert 0 <= img.min() and img.max() <= 1
    tol = 0.25 if fmt == "GIF" else 0.08
    assert np.abs(img - arr / 255).mean() < tol


def test_modes_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((20, 30), 200, np.uint8))
    gray.save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and np.allclose(g, 200 / 255, atol=1e-3)

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 15:, 3] = 255  # left half transparent, right half opaque red
    Image.fromarray(rgba).save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    assert np.allclose(a[:, :10], 1.0) and np.allclose(a[:, 20:], [1, 0, 0])

    deep = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d16.png")
    d = load_image(tmp_path / "d16.png")
    assert d.shape == (20, 30, 3) and d.max() > 0.8 and d[0, 0, 0] == 0

    Image.fromarray(gradient_rgb()).convert("CMYK").save(tmp_path / "c.jpg")
    c = load_image(tmp_path / "c.jpg")
    assert c.shape == (40, 60, 3) and np.abs(c - gradient_rgb() / 255).mean() < 0.1


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # landscape, stored sideways with orientation 6 (rotate 90 CW)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif)
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == (40, 20, 3)  # upright: portrait
    assert img[:15].mean() > 0.9 and img[25:].mean() < 0.1


def test_resize_by_long_side(tmp_path):
    Image.fromarray(gradient_rgb(100, 200)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", max_size=50).shape == (25, 50, 3)
    img = np.random.default_rng(0).uniform(size=(30, 20, 3)).astype(np.float32)
    assert resize(img, 60).shape == (60, 40, 3)
    assert resize(img, (7, 9)).shape == (7, 9, 3)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", os.urandom(4096)])
def test_bad_files_give_one_clear_error(tmp_path, content):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(NSTError) as e:
        load_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg_and_missing_paths(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(gradient_rgb(200, 300)).save(buf, format="JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(NSTError, match="truncated or corrupt"):
        load_image(tmp_path / "t.jpg")
    with pytest.raises(NSTError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(NSTError, match="directory"):
        load_image(tmp_path)


def test_save_is_atomic_and_readable(tmp_path):
    img = np.random.default_rng(0).uniform(size=(10, 12, 3)).astype(np.float32)
    out = save_image(img, tmp_path / "sub" / "o.png")
    back = np.asarray(Image.open(out)) / 255
    assert back.shape == (10, 12, 3) and np.abs(back - img).max() <= 0.5 / 255 + 1e-6
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]  # no temp files left

    class Boom(Exception):
        pass

    from nst_utils.outputs import atomic_write

    def fail(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(out, fail)
    assert np.abs(np.asarray(Image.open(out)) / 255 - img).max() <= 0.5 / 255 + 1e-6  # old file intact
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]


def test_save_follows_the_extension_and_usual_permissions(tmp_path):
    img = np.random.default_rng(1).uniform(size=(8, 9, 3)).astype(np.float32)
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP"), ("d.tiff", "TIFF"), ("e", "PNG")):
        out = save_image(img, tmp_path / name)
        assert Image.open(out).format == fmt
        assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(NSTError, match=r"\.out is not an image format Pillow writes; use one of \.png, \.jpg"):
        save_image(img, tmp_path / "f.out")  # PNG data under another extension: refused (it used to be written)
    assert not (tmp_path / "f.out").exists()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
