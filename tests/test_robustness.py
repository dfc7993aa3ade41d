"""Bad input, interruptions and failures: each gets correct handling or one clear line, a non-zero exit, no bad file.

Every odd file is generated here in tmp_path. Most CLI cases run `nst_utils.cli.main` in this process (same code
path as the `nst` command, without a TensorFlow start-up per case); signals and kill -9 use real subprocesses.
"""

from __future__ import annotations

import io
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import nst_utils.run as opt
from nst_utils import NSTError, StyleConfig, assets, cli, host, images, load_image, memory, outputs, stylize
from nst_utils.images import as_image
from nst_utils.model import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
SIZE, STEPS = "32", "2"


def run_cli(*argv: str, capsys) -> tuple[int, str, str]:
    """Return (exit code, stdout, stderr) of `nst ARGV` run in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Check a failure: exit code 2, one line on stderr naming each needle, no traceback."""
    assert code == 2, err
    assert err.strip().count("\n") == 0 and err.startswith("nst"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def assert_valid_png(path: Path, size: tuple[int, int] | None = None) -> None:
    """Check `path` is a complete, decodable PNG (of `size` if given)."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        if size:
            assert im.size == size


def gradient(h: int = 40, w: int = 60) -> np.ndarray:
    """Return an HxWx3 uint8 test picture."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], -1).astype(np.uint8)


def png_header(w: int, h: int) -> bytes:
    """Return a tiny PNG whose header claims w x h pixels (a decompression bomb's shape, without the data)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(w: int, h: int) -> bytes:
    """Return a small JPEG whose frame header was patched to claim w x h pixels."""
    buf = io.BytesIO()
    Image.fromarray(gradient(64, 64)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.find(b"\xff\xc0")
    b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


# ---------------------------------------------------------------- images


def _bad_file(tmp_path: Path, kind: str) -> Path:
    """Return the path of a broken or missing image of the given kind."""
    p = tmp_path / f"{kind}.jpg"
    if kind == "missing":
        return p
    if kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is a note, not a photo\n")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(gradient(200, 300)).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    elif kind == "bomb":
        p = p.with_suffix(".png")
        p.write_bytes(png_header(100_000, 100_000))
    return p


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("missing", "does not exist|not found"),
        ("directory", "directory"),
        ("empty", "0 bytes"),
        ("text", "not an image"),
        ("random", "not an image"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "pixels"),
    ],
)
def test_bad_images_fail_with_one_line(tmp_path, capsys, kind, needle):
    bad = _bad_file(tmp_path, kind)
    out = tmp_path / "out.png"
    code, _, err = run_cli(
        "stylize", str(bad), str(bad), "--size", SIZE, "--steps", STEPS, "-o", str(out), "-q", capsys=capsys
    )
    assert_one_line_error(code, err, bad.name)
    assert re.search(needle, err), err
    assert not out.exists()
    with pytest.raises(NSTError, match=needle):
        load_image(bad)


def test_bad_image_end_to_end_subprocess(tmp_path):
    bad = _bad_file(tmp_path, "text")
    r = subprocess.run(
        [sys.executable, "-m", "nst_utils", "stylize", str(bad), "-o", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert "text.jpg" in r.stderr and not (tmp_path / "o.png").exists()
    with pytest.raises(NSTError):  # --debug lets the exception (and its traceback) through
        cli.main(["--debug", "stylize", str(bad), "-o", str(tmp_path / "o.png")])


def test_odd_modes_and_formats_load(tmp_path):
    arr = gradient()
    pal = Image.new("P", (60, 40), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (30, 0, 60, 40))
    pal.save(tmp_path / "pal.png", transparency=0)  # palette whose index 0 (left half) is transparent
    p = load_image(tmp_path / "pal.png")
    assert p.shape == (40, 60, 3) and np.allclose(p[:, :30], 1.0) and np.allclose(p[:, 30:], [0, 0, 1])  # on white

    Image.fromarray(arr).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(arr).convert("1").save(tmp_path / "bw.png")
    Image.fromarray(np.random.default_rng(0).random((20, 30)).astype(np.float32)).save(tmp_path / "f.tif")
    Image.fromarray(arr).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16)).save(tmp_path / "d16.png")
    for name in ("la.png", "bw.png", "f.tif", "lzw.tif", "cmyk.jpg", "d16.png"):
        img = load_image(tmp_path / name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.float32, name
        assert np.isfinite(img).all() and 0 <= img.min() and img.max() <= 1 and img.max() > 0.5, name

    frames = [Image.fromarray(np.full((20, 30, 3), c, np.uint8)) for c in ((250, 0, 0), (0, 0, 250))]
    for ext in ("gif", "webp"):
        frames[0].save(tmp_path / f"anim.{ext}", save_all=True, append_images=frames[1:], duration=100, loop=0)
        first = load_image(tmp_path / f"anim.{ext}")
        assert first.shape == (20, 30, 3) and first[..., 0].mean() > 0.9 and first[..., 2].mean() < 0.1, ext


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_photos_come_out_upright(tmp_path, orientation):
    upright = np.zeros((32, 48, 3), np.uint8)
    upright[..., 2] = 255
    upright[:16, :24] = (255, 0, 0)  # red top-left quadrant marks the orientation
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(inverse).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == (32, 48, 3)
    assert img[2:14, 2:22, 0].mean() > 0.8 and img[2:14, 2:22, 2].mean() < 0.2  # red top-left
    assert img[18:, 26:, 2].mean() > 0.8 and img[18:, 26:, 0].mean() < 0.2  # blue elsewhere


def test_tiny_images_are_upscaled_thin_ones_refused(tmp_path):
    Image.fromarray(gradient(1, 1)).save(tmp_path / "dot.png")
    assert as_image(tmp_path / "dot.png", 32).shape == (32, 32, 3)
    Image.fromarray(gradient(3, 900)).save(tmp_path / "thin.png")
    with pytest.raises(NSTError, match="too thin.*at least 16 px.*larger --size"):
        as_image(tmp_path / "thin.png", 64)
    assert as_image(tmp_path / "thin.png", 4800).shape[0] == 16  # a larger size makes it usable
    with pytest.raises(NSTError, match="NaN"):
        as_image(np.full((20, 20, 3), np.nan, np.float32), 32)


def test_huge_images_refused_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))  # 10 G pixels claimed by a 100-byte file
    with pytest.raises(NSTError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png", max_size=64)
    (tmp_path / "bomb.jpg").write_bytes(jpeg_claiming(60_000, 60_000))
    with pytest.raises(NSTError, match="pixels"):
        load_image(tmp_path / "bomb.jpg")  # full size: refused from the header alone
    try:  # draft mode decodes at 1/8 scale (7500x7500): allowed; Pillow then pads or refuses the missing data
        assert load_image(tmp_path / "bomb.jpg", max_size=64).shape == (64, 64, 3)
    except NSTError as exc:
        assert "corrupt" in str(exc)

    big = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=80)
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    assert load_image(tmp_path / "big.jpg", max_size=64).shape == (48, 64, 3)
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    with pytest.raises(NSTError, match="2000x1500"):
        load_image(tmp_path / "big.png", max_size=64)  # PNG has no cheap reduced decode: refused
    assert load_image(tmp_path / "big.jpg", max_size=64).shape == (48, 64, 3)  # JPEG draft is 250x188: fine
    monkeypatch.setattr(images, "MAX_PIXELS", 120_000_000)
    monkeypatch.setattr(host, "available_bytes", lambda: 20 * memory.MIB)
    with pytest.raises(NSTError, match="to decode but only"):
        load_image(tmp_path / "big.png", max_size=64)  # would not fit in (pretend) free memory


def test_odd_inputs_stylize_end_to_end(tmp_path, capsys):
    Image.fromarray(gradient(48, 64)).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(gradient(64, 64)).convert("P").save(tmp_path / "s.png", transparency=3)
    out = tmp_path / "o.png"
    code, stdout, err = run_cli(
        "stylize",
        str(tmp_path / "c.jpg"),
        str(tmp_path / "s.png"),
        "--size",
        SIZE,
        "--steps",
        STEPS,
        "-o",
        str(out),
        "-q",
        capsys=capsys,
    )
    assert code == 0, err
    assert_valid_png(out, (32, 24)) and "wrote" in stdout


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--size", "0"], "--size"),
        (["--size", "-5"], "--size"),
        (["--size", "8"], "at least 16"),
        (["--steps", "0"], "--steps"),
        (["--alpha", "-1"], "--alpha"),
        (["--beta", "nan"], "--beta"),
        (["--tv", "inf"], "--tv"),
        (["--alpha", "-inf"], "--alpha"),
        (["--size", "abc"], "not an integer"),
        (["--optimizer", "sgd"], "lbfgs"),
        (["--content-layers", "block9_conv1"], "block5_conv2"),
        (["--style-layers", "conv1"], "valid: block1_conv1"),
        (["--style-layer-weights", "1", "2"], "style layer weights"),
        (["--alpha", "0", "--beta", "0"], "nothing to optimise"),
    ],
)
def test_bad_parameters_fail_with_one_line(tmp_path, capsys, args, needle):
    out = tmp_path / "o.png"
    code, _, err = run_cli("stylize", "-o", str(out), *args, capsys=capsys)
    assert_one_line_error(code, err, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("size", 0),
        ("size", -3),
        ("size", 12.5),
        ("steps", 0),
        ("alpha", math.nan),
        ("beta", math.inf),
        ("tv", -1.0),
        ("learning_rate", math.nan),
        ("optimizer", "sgd"),
        ("style_layers", ("nope",)),
        ("content_layers", ()),
        ("style_layer_weights", (math.nan,) * 5),
        ("style_layer_weights", (0.0,) * 5),
    ],
)
def test_bad_api_config_raises(field, value):
    with pytest.raises(NSTError) as e:
        StyleConfig(**{field: value})
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- weights


def _bad_weights(tmp_path: Path, kind: str, real: Path) -> Path:
    """Return a weights path of the given kind of wrongness."""
    p = tmp_path / assets.WEIGHTS_FILE
    if kind == "missing":
        return p
    if kind == "folder":
        return tmp_path
    if kind == "truncated":
        with open(real, "rb") as f:
            p.write_bytes(f.read(1 << 20))
    elif kind == "other_model":
        with h5py.File(p, "w") as f:
            g = f.create_group("dense_1")
            g.attrs["weight_names"] = [b"dense_1/kernel:0"]
            g.create_dataset("dense_1/kernel:0", data=np.zeros((4, 4), np.float32))
    elif kind == "wrong_hash":
        data = real.read_bytes()
        p.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, one byte off
    return p


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("truncated", "md5"),
        ("other_model", "md5"),
        ("wrong_hash", "md5"),
    ],
)
def test_bad_weights_fail_clearly_and_load_nothing(tmp_path, capsys, weights_path, kind, needle):
    bad = _bad_weights(tmp_path, kind, weights_path)
    out = tmp_path / "o.png"
    code, _, err = run_cli(
        "stylize", "--weights", str(bad), "--size", SIZE, "--steps", STEPS, "-o", str(out), "-q", capsys=capsys
    )
    assert_one_line_error(code, err, needle, assets.WEIGHTS_FILE, assets.WEIGHTS_URL)
    assert not out.exists()
    # a model built from the good weights earlier in this process must not be reused for bad ones
    img = np.full((32, 32, 3), 0.5, np.float32)
    with pytest.raises(NSTError, match=needle):
        stylize(img, img, size=32, steps=1, progress=False, weights=bad)


# ---------------------------------------------------------------- run time


def test_nan_loss_stops_keeps_last_good_image_nonzero_exit(tmp_path, capsys, monkeypatch):
    real = opt.take_objective

    def poisoned(*a, **k):
        obj, _ = real(*a, **k)
        inner, calls = obj.value_and_grad, tf.Variable(0)  # a variable: counts inside the compiled L-BFGS loop too

        def vg(img):
            terms, grad = inner(img)
            calls.assign_add(1)
            return dict(terms, total=terms["total"] * tf.where(calls >= 3, float("inf"), 1.0)), grad

        obj.value_and_grad = vg
        return obj, None  # an L-BFGS traced with the poisoned evaluation

    monkeypatch.setattr(opt, "take_objective", poisoned)
    monkeypatch.setattr(opt, "keep_objective", lambda plan: None)  # it serves no later run
    src = tmp_path / "c.png"
    Image.fromarray(gradient(48, 64)).save(src)
    out = tmp_path / "o.png"
    code, _, err = run_cli(
        "stylize", str(src), str(src), "--size", SIZE, "--steps", "10", "-o", str(out), "-q", capsys=capsys
    )
    assert code == 1 and "loss became inf at step 3" in err and "Traceback" not in err, err
    assert_valid_png(out, (32, 24))


def default_signals() -> None:
    """Give a child the default SIGHUP, SIGINT and SIGTERM, as a shell in a terminal starts it: a test run started
    under `nohup` (SIGHUP ignored, and kept ignored by `nst`) or in the background (SIGINT ignored) is no different."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _start_cli(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Return a CLI subprocess stylizing for many steps, once it has printed its first loss, and its output path."""
    src = tmp_path / "c.png"
    Image.fromarray(gradient(48, 64)).save(src)
    out = tmp_path / "o.png"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nst_utils",
            "stylize",
            str(src),
            str(src),
            "--size",
            SIZE,
            "--steps",
            "100000",
            "-o",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    seen, deadline = b"", time.monotonic() + 300  # a safety net for a hung child, not a timing assertion
    while b"loss=" not in seen and time.monotonic() < deadline:  # tqdm prints loss=... once steps are running
        chunk = os.read(p.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"loss=" in seen, seen.decode(errors="replace")[-2000:]
    return p, out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_keeps_best_image(tmp_path, sig, code):
    p, out = _start_cli(tmp_path)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == code, stderr.decode(errors="replace")[-2000:]
    assert b"kept the best image" in stderr and b"Traceback" not in stderr
    assert_valid_png(out, (32, 24))
    assert not [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")]


@pytest.mark.parametrize("where", ["file", "proc", "dir"])
def test_unwritable_output_fails_before_optimising(tmp_path, capsys, monkeypatch, where):
    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile" / "sub" / "o.png", "proc": Path("/proc/nst-test/o.png"), "dir": tmp_path}[where]
    called = []
    monkeypatch.setattr(opt, "stylize", lambda *a, **k: called.append(1))  # the CLI must not get this far
    code, _, err = run_cli("stylize", "--size", SIZE, "--steps", STEPS, "-o", str(out), "-q", capsys=capsys)
    assert_one_line_error(code, err, "--output" if where != "dir" else "directory")
    assert not called
    code, _, err = run_cli(
        "stylize",
        "--size",
        SIZE,
        "-o",
        str(tmp_path / "ok.png"),
        "--log",
        str(tmp_path / "afile" / "h.json"),
        capsys=capsys,
    )
    assert_one_line_error(code, err, "afile is a file")
    assert not called


SAVE_LOOP = """
import sys, types
pkg = types.ModuleType("nst_utils"); pkg.__path__ = [sys.argv[2]]; sys.modules["nst_utils"] = pkg  # skip TensorFlow
import numpy as np
from nst_utils.outputs import save_image
rng = np.random.default_rng(0)
img = rng.random((400, 400, 3), dtype=np.float32)
save_image(img, sys.argv[1])
print("saving", flush=True)
while True:
    save_image(rng.random((400, 400, 3), dtype=np.float32), sys.argv[1])
"""


def test_kill_9_during_saves_never_leaves_half_a_png(tmp_path):
    out = tmp_path / "o.png"
    for delay in (0.0, 0.05, 0.13, 0.31):
        p = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(out), str(ROOT / "nst_utils")], stdout=subprocess.PIPE
        )
        assert p.stdout.readline().strip() == b"saving"
        time.sleep(delay)  # vary where in a save the kill lands; not a timing assertion
        p.kill()
        p.wait()
        assert_valid_png(out, (400, 400))
        for q in tmp_path.glob(".o.png.*.tmp"):  # a killed writer may leave its hidden temp file, never o.png half-done
            q.unlink()


def test_failed_write_keeps_old_output(tmp_path, monkeypatch):
    out = tmp_path / "out" / "o.png"
    outputs.save_image(np.zeros((8, 8, 3), np.float32), out)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # where the failed write's content is kept
    outputs.fallback_dir.cache_clear()

    def half_then_fail(self, fp, *a, **k):
        fp.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    with pytest.raises(
        outputs.WriteError, match=f"could not write {out}: No space left on device; no copy could be kept"
    ):
        outputs.save_image(np.ones((8, 8, 3), np.float32), out)  # the fallback copy fails the same way here
    monkeypatch.undo()
    outputs.fallback_dir.cache_clear()
    assert np.asarray(Image.open(out)).max() == 0  # the old file, intact
    assert [q.name for q in out.parent.iterdir()] == ["o.png"]
    assert [q.name for q in (tmp_path / "tmp").glob("*/*")] == []  # no temp file left in the fallback folder either


# ---------------------------------------------------------------- memory


def test_memory_estimate_grows_with_size_and_counts_layers():
    assert memory.activation_elements(32, 32, ["block1_conv1"]) == 32 * 32 * 64
    assert memory.activation_elements(32, 32, ["block1_pool"]) == 2 * 32 * 32 * 64 + 16 * 16 * 64
    sizes = [memory.estimate_bytes(s, s) for s in (64, 256, 1024, 4096)]
    assert sizes == sorted(sizes) and sizes[0] > memory.BASE_BYTES
    assert memory.estimate_bytes(512, 512, ["block1_conv1"]) < memory.estimate_bytes(512, 512)
    assert memory.estimate_bytes(512, 512, optimizer="adam") < memory.estimate_bytes(512, 512)


def test_memory_check_refuses_with_largest_size_that_fits(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(host, "available_bytes", lambda: 300 * memory.MIB)
    monkeypatch.setattr(host, "resident_bytes", lambda: memory.BASE_BYTES)
    config = StyleConfig(size=4000, precision=resolve_precision("auto"))  # as a run counts it (bfloat16: half)
    with pytest.raises(NSTError, match=r"in tiles of 128 px but only .* use --size \d+ or less") as e:
        memory.fit(3000, 4000, config)  # not even the smallest tiles fit: refused, with the largest size in tiles
    fits = int(str(e.value).split("--size ")[1].split()[0])
    budget = 300 * memory.MIB * memory.SAFETY + memory.BASE_BYTES
    from nst_utils.images import fit_long_side

    def tiled(side: int) -> int:
        h, w = fit_long_side((3000, 4000), side)
        return memory.estimate_bytes(
            h, w, maxcor=memory.history(h, w), tile=memory.MIN_TILE, precision=config.precision
        )

    assert 16 < fits < 4000
    assert tiled(fits) <= budget < tiled(fits + 1)
    assert memory.fit(48, 64, config).need > 0 and memory.fit(48, 64, config).tile == 0  # small runs pass, untiled
    with pytest.raises(NSTError, match=r"needs about [\d.]+ GiB of memory but only") as e:
        memory.fit(3000, 4000, config.replace(tile=0))  # tiles forbidden: the largest untiled size
    assert "tiles" not in str(e.value)

    src = tmp_path / "c.png"
    Image.fromarray(gradient(48, 64)).save(src)
    out = tmp_path / "o.png"
    code, _, err = run_cli("stylize", str(src), str(src), "--size", "4000", "-o", str(out), "-q", capsys=capsys)
    assert_one_line_error(code, err, "GiB", f"use --size {fits} or less")
    assert not out.exists()
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    assert memory.fit(3000, 4000, config).budget is None
