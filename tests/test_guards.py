"""A user's work is never lost to a cache, a malformed checkpoint, a sweep cell gone wrong or an API argument of the
wrong kind (issue 29): each case either works (a cache is only an optimisation) or is refused in one line before any
work, with the inputs byte-identical afterwards and nothing written."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import nst_in_process, synthetic_image
from PIL import Image

from nst_utils import assets, model, outputs
from nst_utils.checkpoint import load
from nst_utils.config import NSTError, StyleConfig
from nst_utils.images import array_image, as_image
from nst_utils.run import stylize
from nst_utils.sweep import ratio_settings, sweep

FAST = dict(size=32, precision="float32", progress=False)
TINY = 32  # px of the reference images for the channel means in these tests (the real cache key has 384)


def warnings_in(err: str) -> list[str]:
    """Return the warning lines of a stderr text."""
    return [line for line in err.splitlines() if "warning" in line.lower()]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Assert exit 2 with exactly one line on stderr, `nst: error: ...`, containing every needle."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nst: error:"), err
    assert "Traceback" not in err and all(n in err for n in needles), err


# ---------------------------------------------------------------- caches


@pytest.fixture
def tiny_means(monkeypatch):
    """Compute the channel means from 32-px reference images (fast) and forget the ones this process computed."""
    monkeypatch.setattr(model, "REFERENCE_SIZE", TINY)
    monkeypatch.setattr(assets, "_WARNED", set())
    monkeypatch.setattr(model, "_EXTRACTORS", {})  # a normalised VGG19 an earlier test built holds its means already
    model.channel_means.cache_clear()
    yield
    model.channel_means.cache_clear()


@pytest.fixture
def reference_means(tiny_means, tmp_path_factory, monkeypatch):
    """Return the channel means computed with a writable cache (what every fallback must give too)."""
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(tmp_path_factory.mktemp("good-cache")))
    means = model.channel_means("max")
    model.channel_means.cache_clear()
    return means


def _unwritable(tmp_path: Path, kind: str) -> Path:
    """Return a cache folder that cannot be written, even by root: a file, a folder under a file, or /proc."""
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    return {"file": blocker, "under-a-file": blocker / "cache", "proc": Path("/proc")}[kind]


@pytest.mark.parametrize("kind", ["file", "under-a-file", "proc"])
def test_unwritable_cache_computes_in_memory_with_one_warning(tmp_path, monkeypatch, capsys, reference_means, kind):
    folder = _unwritable(tmp_path, kind)
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(folder))
    before = (tmp_path / "a-file").read_bytes()
    first = model.channel_means("max")
    model.channel_means.cache_clear()
    again = model.channel_means("max")  # a second computation in this process: no second warning
    err = capsys.readouterr().err
    assert all(np.array_equal(first[n], reference_means[n]) and np.array_equal(again[n], first[n]) for n in first)
    assert len(warnings_in(err)) == 1 and str(folder) in err and "Traceback" not in err, err
    assert (tmp_path / "a-file").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage, not an npz", "wrong shapes", "nan", "fifo"],
    ids=["zero-byte", "garbage", "wrong-shapes", "nan", "fifo"],
)
def test_corrupt_cache_entry_is_recomputed_and_replaced(tmp_path, monkeypatch, capsys, reference_means, content):
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(tmp_path))
    path = model._means_path("max", assets.weights_path())
    if content == "wrong shapes":
        buf = io.BytesIO()
        np.savez(buf, **{n: np.ones(3, np.float32) for n in reference_means})
        content = buf.getvalue()
    elif content == "nan":
        buf = io.BytesIO()
        np.savez(buf, **{n: np.full_like(m, np.nan) for n, m in reference_means.items()})
        content = buf.getvalue()
    if content == "fifo":  # reading it would block: never read, replaced by a file
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    means = model.channel_means("max")
    assert all(np.array_equal(means[n], reference_means[n]) for n in means)
    with np.load(path) as f:  # replaced whole by the recomputed means
        assert all(np.array_equal(f[n], reference_means[n]) for n in reference_means)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left
    assert warnings_in(capsys.readouterr().err) == []


def test_default_sweep_works_with_an_unwritable_cache(tmp_path, monkeypatch, capsys, tiny_means):
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(_unwritable(tmp_path, "under-a-file")))
    out = tmp_path / "grid.png"
    code, err = nst_in_process(
        capsys, "sweep", "--size", "32", "--steps", "2", "--ratios", "1", "10", "-o", str(out), "-q"
    )  # `nst sweep` runs the normalised VGG19: it needs the channel means
    assert code == 0 and len(warnings_in(err)) == 1 and "Traceback" not in err, err
    assert Image.open(out).size[0] > 0


def test_keras_cache_unwritable_or_corrupt(tmp_path, monkeypatch, capsys, weights_path):
    monkeypatch.setattr(assets, "_WARNED", set())
    monkeypatch.setenv("KERAS_HOME", str(_unwritable(tmp_path, "file")))
    assert assets.weights_for_keras() == weights_path  # the verified file itself, after one warning
    assert len(warnings_in(capsys.readouterr().err)) == 1
    home = tmp_path / "keras"
    cached = home / "models" / assets.WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")  # a zero-byte (interrupted) download: replaced by the verified file
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert assets.weights_for_keras() == cached and assets.md5(cached) == assets.WEIGHTS_MD5
    assert sorted(p.name for p in cached.parent.iterdir()) == [assets.WEIGHTS_FILE]
    assert warnings_in(capsys.readouterr().err) == []


def test_image_download_cache_unwritable_or_corrupt(tmp_path, monkeypatch, capsys):
    name = "tubingen.jpg"
    source = assets.image_path(name)  # the local copy (NST_DATA_DIR) plays the server
    monkeypatch.delenv(assets.DATA_DIR_ENV)
    monkeypatch.setattr(assets, "_WARNED", set())
    fetched = []

    def fake_retrieve(url, known_hash, fname, path, downloader):
        fetched.append(Path(path))
        shutil.copyfile(source, Path(path) / fname)
        return str(Path(path) / fname)

    import pooch

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(_unwritable(tmp_path, "file")))
    got = assets.image_path(name)
    assert got.read_bytes() == source.read_bytes() and fetched[-1] != tmp_path / "a-file"
    assert len(warnings_in(capsys.readouterr().err)) == 1
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes(b"")  # a zero-byte cached copy is not used: downloaded again into the cache
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(cache))
    assert assets.image_path(name) == cache / name and (cache / name).read_bytes() == source.read_bytes()
    assert fetched[-1] == cache


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Return {optimizer: checkpoint} of 32-px runs with one style layer, interrupted after 2 of 4 steps."""
    d = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    content, style = rng.random((24, 32, 3), dtype=np.float32), rng.random((32, 32, 3), dtype=np.float32)

    def stop(step, image, terms):
        if step == 2:
            raise KeyboardInterrupt

    out = {}
    for optimizer in ("adam", "lbfgs"):
        r = stylize(
            content,
            style,
            steps=4,
            optimizer=optimizer,
            style_layers=("block1_conv1",),
            callback=stop,
            checkpoint=d / f"{optimizer}.npz",
            **FAST,
        )
        out[optimizer] = Path(r.checkpoint)
    return out


def tampered(src: Path, dst: Path, meta: dict | None = None, drop: tuple = (), **arrays) -> Path:
    """Return `dst`: the checkpoint `src` with header fields replaced (`meta`), arrays replaced or dropped."""
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    header = json.loads(str(data["meta"]))
    if meta is not None:
        header = meta(header) if callable(meta) else header | meta
    data["meta"] = np.array(json.dumps(header))
    data |= arrays
    for k in drop:
        data.pop(k)
    with open(dst, "wb") as f:
        np.savez(f, **data)
    return dst


NAN = np.full((24, 32, 3), np.nan, np.float32)
MALFORMED = {  # case: (optimizer, tampering, words of the one line)
    "meta-a-list": ("adam", dict(meta=lambda h: [h]), "header is a JSON list"),
    "version-a-string": ("adam", dict(meta={"version": "1"}), "version is '1'"),
    "config-a-list": ("adam", dict(meta={"config": [32]}), "config is [32]"),
    "config-unknown-field": ("adam", dict(meta=lambda h: h | {"config": h["config"] | {"sise": 3}}), "sise"),
    "config-size-a-string": ("adam", dict(meta=lambda h: h | {"config": h["config"] | {"size": "32"}}), "size"),
    "history-missing-term": ("adam", dict(meta=lambda h: h | {"history": {"total": [1.0, 2.0]}}), "history"),
    "history-ragged": (
        "adam",
        dict(meta=lambda h: h | {"history": h["history"] | {"tv": [1.0]}}),
        "history's lists differ",
    ),
    "history-strings": ("adam", dict(meta=lambda h: h | {"history": {k: ["a"] for k in h["history"]}}), "history"),
    "best-loss-a-string": ("adam", dict(meta={"best_loss": "low"}), "best_loss is 'low'"),
    "n-styles-a-string": ("adam", dict(meta={"n_styles": "1"}), "n_styles is '1'"),
    "n-styles-huge": ("adam", dict(meta={"n_styles": 10**9}), "n_styles"),
    "n-optimizer-negative": ("adam", dict(meta={"n_optimizer": -1}), "n_optimizer is -1"),
    "blend-wrong-length": ("adam", dict(meta={"blend": [1, 2]}), "blend is [1, 2]"),
    "colour-unknown": ("adam", dict(meta={"colour": "sepia"}), "colour is 'sepia'"),
    "content-rank-2": ("adam", dict(content=np.zeros((24, 32), np.float32)), "content has shape (24, 32)"),
    "image-integers": ("adam", dict(image=np.zeros((24, 32, 3), np.int64)), "image has dtype int64"),
    "best-image-other-shape": ("adam", dict(best_image=np.zeros((24, 30, 3), np.float32)), "best_image has shape"),
    "style-rgba": ("adam", dict(style_0=np.zeros((32, 32, 4), np.float32)), "style_0 has shape (32, 32, 4)"),
    "style-missing": ("adam", dict(drop=("style_0",)), "no style_0 array"),
    "mask-rank-3": ("adam", dict(mask=np.zeros((24, 32, 3), np.float32)), "mask has shape"),
    "best-image-nan": ("adam", dict(best_image=NAN), "best_image has NaN"),
    "image-inf": ("adam", dict(image=np.full((24, 32, 3), np.inf, np.float32)), "image has NaN or infinite"),
    "content-nan": ("adam", dict(content=NAN), "content has NaN"),
    "adam-state-shape": ("adam", dict(opt_1=np.zeros((1, 24, 30, 3), np.float32)), "Adam state has shapes"),
    "adam-iteration-float": ("adam", dict(opt_0=np.array(2.0)), "Adam iteration count has dtype float64"),
    "adam-state-missing": ("adam", dict(drop=("opt_2",)), "no opt_2 array"),
    "lbfgs-state-rank": ("lbfgs", dict(opt_7=np.zeros((20, 2304, 1, 1), np.float32)), "L-BFGS state has shapes"),
    "lbfgs-state-shape": ("lbfgs", dict(opt_7=np.zeros((1, 20, 100), np.float32)), "L-BFGS state does not fit"),
    "lbfgs-best-nan": ("lbfgs", dict(best_image=NAN), "best_image has NaN"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_checkpoint_is_one_line_and_touches_nothing(tmp_path, capsys, checkpoints, case):
    optimizer, change, needle = MALFORMED[case]
    bad = tampered(checkpoints[optimizer], tmp_path / "bad.ckpt.npz", **change)
    before = bad.read_bytes()
    out = tmp_path / "out" / "o.png"
    code, err = nst_in_process(capsys, "stylize", "--resume", str(bad), "-o", str(out), "-q")
    assert_one_line_error(code, err, str(bad), needle)
    assert bad.read_bytes() == before and not out.exists() and not (tmp_path / "out" / "o.ckpt.npz").exists()
    with pytest.raises(NSTError, match="checkpoint"):  # the API says the same
        stylize(resume=bad, progress=False)
    assert bad.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", "npy"], ids=["zero-byte", "garbage", "npy"])
def test_unreadable_checkpoint_is_one_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.ckpt.npz"
    if content == "npy":
        np.save(bad.with_suffix(""), np.zeros(3))
        bad.with_suffix(".npy").rename(bad)
    else:
        bad.write_bytes(content)
    before = bad.read_bytes()
    code, err = nst_in_process(capsys, "stylize", "--resume", str(bad), "-o", str(tmp_path / "o.png"), "-q")
    assert_one_line_error(code, err, "not a readable nst checkpoint")
    assert bad.read_bytes() == before and not (tmp_path / "o.png").exists()


def test_resume_at_its_own_step_count_says_so(tmp_path, capsys, checkpoints):
    ckpt = checkpoints["adam"]
    out = tmp_path / "o.png"
    code, err = nst_in_process(capsys, "stylize", "--resume", str(ckpt), "--steps", "2", "-o", str(out), "-q")
    assert code == 0 and "nothing to optimise: the checkpoint already holds 2 steps" in err, err
    best = load(ckpt).best_image
    assert np.array_equal(np.asarray(Image.open(out)), (np.clip(best, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_a_nan_image_is_never_written_as_a_picture(tmp_path):
    with pytest.raises(NSTError, match="NaN or infinite"):
        outputs.save_image(np.full((16, 16, 3), np.nan, np.float32), tmp_path / "o.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- sweeps and unoptimised results


def test_sweep_names_the_cell_that_went_non_finite(tmp_path, monkeypatch, capsys, tiny_means):
    monkeypatch.setenv(assets.CACHE_DIR_ENV, str(tmp_path / "cache"))
    out = tmp_path / "grid.png"
    code, err = nst_in_process(
        capsys, "sweep", "--size", "32", "--steps", "3", "--ratios", "1", "1e308", "-o", str(out), "-q"
    )
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err
    assert any("cell r0_c1 (beta/alpha 1e+308" in x and "non-finite at step 1" in x for x in lines), err
    assert any("cell r0_c0 (beta/alpha 1" in x and "another cell's loss" in x for x in lines), err
    assert all("unoptimised start" in x for x in lines) and len(lines) == 2, err
    assert out.exists()  # the grid is still written: what the cells hold is shown


def test_sweep_setting_out_of_range_names_it(tmp_path, capsys):
    grid = str(tmp_path / "g.png")  # beta = 1e308 * alpha overflows: refused before any work
    code, err = nst_in_process(
        capsys, "sweep", "--no-normalize-vgg", "--size", "32", "--ratios", "1", "1e308", "-o", grid
    )
    assert_one_line_error(code, err, "sweep setting 1", "beta must be a finite number")
    assert list(tmp_path.iterdir()) == []


def test_sweep_api_marks_the_unoptimised_cells(content_image, style_image):
    results = sweep(content_image, style_image, settings=ratio_settings([1e-4, 1e304]), steps=3, **FAST)
    assert [r.unoptimised for r in results] == [True, True]
    assert "loss became non-finite at step 1" in results[1].message and "another cell" in results[0].message


def test_stylize_says_when_its_result_is_the_start_image(tmp_path, capsys):
    src = tmp_path / "c.png"
    Image.fromarray((synthetic_image(24, 32) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "o.png"
    code, err = nst_in_process(
        capsys, "stylize", str(src), str(src), "--size", "32", "--steps", "3", "--beta", "1e308", "-o", str(out), "-q"
    )
    assert code == 1 and "loss became" in err and "at step 1; the result is the unoptimised start image" in err, err
    assert out.exists()


# ---------------------------------------------------------------- the Python API's inputs


def test_uint8_arrays_are_read_as_0_to_255(content_image, style_image):
    c8, s8 = (np.round(x * 255).astype(np.uint8) for x in (content_image, style_image))
    a = stylize(c8, s8, steps=3, **FAST)
    b = stylize(c8 / 255.0, s8.astype(np.float32) / 255, steps=3, **FAST)
    assert np.array_equal(a.image, b.image) and a.history == b.history
    assert 0.2 < a.image.mean() < 0.8  # not clipped to white
    u16 = (content_image * 65535).astype(np.uint16)
    assert np.allclose(array_image(u16), u16 / 65535.0, atol=1e-7)
    assert np.array_equal(array_image(c8[..., 0]), np.repeat(c8[..., :1], 3, -1) / np.float32(255))  # HxW grey


@pytest.mark.parametrize(
    "array,needle",
    [
        (np.full((24, 32, 3), 200.0), "divide a 0-255 image by 255"),
        (np.full((24, 32, 3), -3.0), "rescale it"),
        (np.zeros((24, 32, 3), np.int64), "dtype int64 is ambiguous"),
        (np.zeros((24, 32, 3), bool), "dtype bool is ambiguous"),
        (np.zeros((24, 32, 4), np.float32), "drop the alpha channel"),
        (np.zeros((3, 24, 32), np.float32), "np.moveaxis"),
        (np.full((24, 32, 3), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_image_arrays_of_the_wrong_kind_are_refused(array, needle):
    with pytest.raises(NSTError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        as_image(array)


@pytest.mark.parametrize(
    "init,needle",
    [
        (np.full((24, 32, 3), np.nan, np.float32), "NaN or infinite"),
        (np.zeros((24, 32, 4), np.float32), "HxWx3"),
        (np.zeros((5,), np.float32), "HxWx3"),
        (np.full((24, 32, 3), 255.0, np.float32), "divide"),
    ],
)
def test_bad_init_image_is_refused_before_work(tmp_path, content_image, style_image, init, needle):
    with pytest.raises(NSTError, match=needle):
        stylize(content_image, style_image, init_image=init, steps=2, output=tmp_path / "o.png", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_grey_init_image_is_taken_as_grey(content_image, style_image):
    grey = content_image.mean(-1)
    a = stylize(content_image, style_image, init_image=grey, steps=2, **FAST)
    b = stylize(content_image, style_image, init_image=np.repeat(grey[..., None], 3, -1), steps=2, **FAST)
    assert np.isfinite(a.image).all() and np.array_equal(a.image, b.image)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(config={"size": 32}), r"StyleConfig\(\*\*d\)"),
        (dict(config=StyleConfig, steps=2), "config must be a StyleConfig"),
        (dict(stepz=2), "unknown setting"),
        (dict(progress="no"), "progress must be True or False"),
        (dict(callback=5), "callback must be a function"),
        (dict(save_every="2", output="o.png"), "save_every must be a whole number"),
        (dict(style=["a.jpg", 5]), r"style\[1\] must be a path"),
        (dict(content=[[0.5]]), "content must be a path"),
    ],
)
def test_api_arguments_of_the_wrong_type_raise_type_error(tmp_path, monkeypatch, kwargs, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=needle):
        stylize(**kwargs)
    if "save_every" not in kwargs and "progress" not in kwargs:
        with pytest.raises(TypeError, match=needle):
            sweep(settings=ratio_settings([1]), **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_run_that_never_beats_its_start_says_its_result_is_the_start(optimizer):
    photo = synthetic_image(24, 32, seed=3)
    config = StyleConfig(size=32, steps=4, beta=0.0, tv=0.0, optimizer=optimizer)  # the photo itself is the minimum
    result = stylize(photo, synthetic_image(24, 32, seed=4), config, progress=False)
    assert result.steps == 4 and result.best_loss >= result.history["total"][0]
    assert "the result is the start image" in result.message and not result.unoptimised
    moving = stylize(photo, synthetic_image(24, 32, seed=4), config.replace(beta=1e-2), progress=False)
    assert "start image" not in moving.message  # a run that lowers its loss says nothing of the kind
