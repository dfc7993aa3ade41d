"""Writes that fail mid-run or at the end, and resumes with flags the checkpoint cannot honour.

A failed write (disk full, a folder that turns read-only or into a file) must end the CLI with one line naming the
path and the reason, keep the work in a fallback folder the line names, and leave no temp file behind. A flag given
with --resume is applied or refused with one line, never dropped. CLI cases run `nst_utils.cli.main` in-process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_robustness import assert_one_line_error, assert_valid_png, gradient, run_cli

from nst_utils import NSTError, StyleConfig, outputs, stylize
from nst_utils.checkpoint import load
from nst_utils.outputs import WriteError

FAST = dict(size=32, progress=False, optimizer="adam", precision="float32")


@pytest.fixture
def fallback(tmp_path, monkeypatch) -> Path:
    """Return the system temp folder for this test (where failed writes are kept), empty."""
    tmp = tmp_path / "systemp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    outputs.fallback_dir.cache_clear()
    yield tmp
    outputs.fallback_dir.cache_clear()


@pytest.fixture
def disk_full(tmp_path, monkeypatch) -> Path:
    """Return a folder on a 'full disk': every file written under it fails with ENOSPC when it is flushed to disk."""
    full = tmp_path / "full"
    full.mkdir()
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(full)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return full


def picture(tmp_path: Path) -> Path:
    """Return the path of a small test picture."""
    src = tmp_path / "c.png"
    Image.fromarray(gradient(48, 64)).save(src)
    return src


def style_picture(tmp_path: Path) -> Path:
    """Return the path of a small noise picture, a style unlike picture()'s (a run from that photo lowers its loss;
    with the photo as its own style the start is already the best, and the run says so)."""
    src = tmp_path / "s.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src)
    return src


def kept_dir(fallback: Path) -> Path:
    """Return the one folder this process kept files in."""
    (d,) = fallback.glob("nst-kept-*")
    return d


def no_temp_files(*folders: Path) -> bool:
    """Return True if no atomic-write temp file is left in the folders."""
    return not [q for f in folders if f.is_dir() for q in f.iterdir() if q.name.endswith(".tmp")]


# ---------------------------------------------------------------- one write


def test_failed_write_keeps_a_copy_in_the_temp_folder(tmp_path, fallback, disk_full):
    out = disk_full / "o.png"
    img = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    with pytest.raises(WriteError) as e:
        outputs.save_image(img, out)
    kept = kept_dir(fallback) / "o.png"
    assert str(e.value) == f"could not write {out}: No space left on device; wrote it to {kept} instead"
    assert e.value.kept == kept and np.abs(np.asarray(Image.open(kept)) / 255 - img).max() <= 0.5 / 255 + 1e-6
    assert list(disk_full.iterdir()) == []  # no half file, no temp file


def test_when_the_fallback_fails_too_the_line_says_so(tmp_path, monkeypatch, disk_full):
    monkeypatch.setattr(tempfile, "tempdir", str(disk_full))  # the temp folder is on the same full disk
    outputs.fallback_dir.cache_clear()
    try:
        with pytest.raises(
            WriteError,
            match=f"could not write {disk_full}/h.json: No space left on device; no copy "
            f"could be kept in {disk_full} either \\(No space left on device\\)",
        ):
            outputs.write_text("{}", disk_full / "h.json")
    finally:
        outputs.fallback_dir.cache_clear()
    assert no_temp_files(disk_full, *disk_full.glob("nst-kept-*"))


# ---------------------------------------------------------------- the CLI


def test_disk_full_at_the_end_keeps_result_plot_and_log(tmp_path, capsys, fallback, disk_full):
    out = disk_full / "o.png"
    code, stdout, err = run_cli(
        "stylize",
        str(picture(tmp_path)),
        str(style_picture(tmp_path)),
        "--size",
        "32",
        "--steps",
        "3",
        "-o",
        str(out),
        "--plot",
        str(disk_full / "l.png"),
        "--log",
        str(disk_full / "h.json"),
        "-q",
        capsys=capsys,
    )
    k = kept_dir(fallback)
    assert err.strip() == (
        f"nst: error: could not write {out}, {disk_full}/l.png, {disk_full}/h.json: No space left "
        f"on device; the result is in {k}/o.png, the plot is in {k}/l.png, the log is in {k}/h.json"
    )
    assert_one_line_error(code, err)
    assert stdout == ""  # no "wrote ..." line for a file that was not written
    assert_valid_png(k / "o.png", (32, 24))
    assert_valid_png(k / "l.png")
    assert len(json.loads((k / "h.json").read_text())["history"]["total"]) == 3
    assert list(disk_full.iterdir()) == []


def _replace_with_a_file(folder: Path) -> None:
    """Make `folder` unwritable mid-run for any user, root included: move it away, put a file in its place."""
    shutil.move(folder, folder.with_name(folder.name + ".moved"))
    folder.write_text("not a folder any more")


def _make_read_only(folder: Path) -> None:
    """Make `folder` read-only (stops writes for users other than root)."""
    folder.chmod(0o555)


@pytest.mark.parametrize("break_folder", [_replace_with_a_file, _make_read_only], ids=["file", "read-only"])
def test_folder_breaking_mid_run_stops_and_keeps_result_and_checkpoint(
    tmp_path, capsys, monkeypatch, fallback, break_folder
):
    if break_folder is _make_read_only and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the 'file' case covers root")
    folder = tmp_path / "out"
    out = folder / "o.png"
    real = outputs.SaveEvery.__call__

    def save_then_break(self, step, image, terms):
        real(self, step, image, terms)
        if step == 2:
            break_folder(folder)

    monkeypatch.setattr(outputs.SaveEvery, "__call__", save_then_break)
    src = str(picture(tmp_path))
    try:
        code, stdout, err = run_cli(
            "stylize",
            src,
            str(style_picture(tmp_path)),
            "--size",
            "32",
            "--steps",
            "50",
            "--save-every",
            "1",
            "-o",
            str(out),
            "-q",
            capsys=capsys,
        )
    finally:
        folder.chmod(0o755) if folder.is_dir() else None
    k = kept_dir(fallback)
    reason = "Not a directory" if break_folder is _replace_with_a_file else "Permission denied"
    assert err.strip() == (
        f"nst: error: could not write {folder}/o_0003.png, {folder}/o.ckpt.npz, {out}: {reason}; "
        f"stopped after step 3; the checkpoint to resume from is in {k}/o.ckpt.npz, "
        f"the result is in {k}/o.png"
    )
    assert_one_line_error(code, err)
    assert_valid_png(k / "o.png", (32, 24))
    moved = folder.with_name("out.moved") if break_folder is _replace_with_a_file else folder
    assert sorted(q.name for q in moved.iterdir()) == ["o_0001.png", "o_0002.png"]  # no temp files left
    ckpt = load(k / "o.ckpt.npz")
    assert ckpt.step == 3 and ckpt.config.steps == 50

    monkeypatch.undo()  # the work goes on from the kept checkpoint
    code, stdout, err = run_cli(
        "stylize",
        "--resume",
        str(k / "o.ckpt.npz"),
        "--steps",
        "5",
        "-o",
        str(tmp_path / "again.png"),
        "--log",
        str(tmp_path / "h.json"),
        "-q",
        capsys=capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "h.json").read_text())["history"]["total"][:3] == ckpt.history["total"]


def test_sweep_grid_on_a_full_disk_keeps_it_and_writes_the_images(tmp_path, capsys, fallback, disk_full):
    src, ok = str(picture(tmp_path)), tmp_path / "imgs"
    code, stdout, err = run_cli(
        "sweep",
        src,
        str(style_picture(tmp_path)),
        "--size",
        "32",
        "--steps",
        "2",
        "--ratios",
        "10",
        "100",
        "-o",
        str(disk_full / "grid.png"),
        "--save-dir",
        str(ok),
        "-q",
        capsys=capsys,
    )
    k = kept_dir(fallback)
    assert err.strip() == (
        f"nst: error: could not write {disk_full}/grid.png: No space left on device; the grid is in "
        f"{k}/grid.png, r0_c0.png is in {ok}/r0_c0.png, r0_c1.png is in {ok}/r0_c1.png"
    )
    assert_one_line_error(code, err)
    assert_valid_png(k / "grid.png")
    assert sorted(q.name for q in ok.iterdir()) == ["r0_c0.png", "r0_c1.png"] and list(disk_full.iterdir()) == []


def test_interrupt_with_a_full_disk_keeps_the_checkpoint(tmp_path, fallback, disk_full, content_image, style_image):
    def stop(step, image, terms):
        if step == 2:
            raise KeyboardInterrupt

    r = stylize(content_image, style_image, steps=10, callback=stop, output=disk_full / "o.png", **FAST)
    k = kept_dir(fallback)
    assert r.interrupted and r.checkpoint == str(k / "o.ckpt.npz") and load(r.checkpoint).step == 2
    assert r.message == (
        f"could not write {disk_full}/o.ckpt.npz, {disk_full}/o.png: No space left on device; "
        f"interrupted; kept the best image so far; the checkpoint to resume from is in {k}/o.ckpt.npz, "
        f"the result is in {k}/o.png"
    )
    assert list(disk_full.iterdir()) == []


# ---------------------------------------------------------------- --resume


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory) -> Path:
    """Return a checkpoint of a 32 px Adam run with two style layers, interrupted after 2 of 4 steps."""
    d = tmp_path_factory.mktemp("cut")
    rng = np.random.default_rng(0)
    content, style = rng.random((24, 32, 3), dtype=np.float32), rng.random((32, 32, 3), dtype=np.float32)

    def stop(step, image, terms):
        if step == 2:
            raise KeyboardInterrupt

    r = stylize(
        content,
        style,
        steps=4,
        style_layers=("block1_conv1", "block2_conv1"),
        callback=stop,
        checkpoint=d / "c.npz",
        **FAST,
    )
    return Path(r.checkpoint)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--size", "64"], "size (32 in the checkpoint, 64 asked)"),
        (["--size", "512"], "size (32 in the checkpoint, 512 asked)"),  # the parser's default, typed: still a conflict
        (
            ["--style-layers", "block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"],
            "style_layers (('block1_conv1', 'block2_conv1') in the checkpoint, ('block1_conv1', 'block2_conv1', "
            "'block3_conv1', 'block4_conv1', 'block5_conv1') asked)",
        ),
        (["--pooling", "avg", "--beta", "1"], "pooling ('max' in the checkpoint, 'avg' asked)"),
        (["--style-layer-weights", "1", "3"], "style_layer_weights (None in the checkpoint, (1.0, 3.0) asked)"),
        (["--optimizer", "lbfgs"], "optimizer ('adam' in the checkpoint, 'lbfgs' asked)"),
        (["--init", "noise"], "init ('content' in the checkpoint, 'noise' asked)"),
        (["--style-scale", "0.5"], "style_scale (1.0 in the checkpoint, 0.5 asked)"),
    ],
)
def test_resume_refuses_flags_the_checkpoint_cannot_honour(tmp_path, capsys, cut_run, flags, needle):
    code, _, err = run_cli("stylize", "--resume", str(cut_run), *flags, "-o", str(tmp_path / "o.png"), capsys=capsys)
    assert_one_line_error(code, err, "cannot change", needle, "when resuming")
    if "--beta" in flags:
        assert "beta (0.01 in the checkpoint, 1.0 asked)" in err  # every conflict is named
    assert not (tmp_path / "o.png").exists()


def test_resume_applies_steps_lr_precision_and_new_outputs(tmp_path, capsys, cut_run):
    out, log = tmp_path / "new" / "o.png", tmp_path / "h.json"
    code, stdout, err = run_cli(
        "stylize",
        "--resume",
        str(cut_run),
        "--steps",
        "5",
        "--lr",
        "0.05",
        "--precision",
        "float32",
        "--size",
        "32",
        "--save-every",
        "4",
        "--plot",
        str(tmp_path / "l.png"),
        "-o",
        str(out),
        "--log",
        str(log),
        "-q",
        capsys=capsys,
    )
    assert code == 0, err
    h = json.loads(log.read_text())
    assert h["config"]["steps"] == 5 and h["config"]["learning_rate"] == 0.05 and h["config"]["size"] == 32
    assert len(h["history"]["total"]) == 5 and h["history"]["total"][:2] == load(cut_run).history["total"]
    assert sorted(q.name for q in out.parent.iterdir()) == ["o.png", "o_0004.png"]
    assert_valid_png(tmp_path / "l.png")


def test_resume_api_refuses_conflicts_and_a_config(cut_run):
    with pytest.raises(NSTError, match=r"cannot change size \(32 in the checkpoint, 64 asked\)"):
        stylize(resume=cut_run, size=64, progress=False)
    with pytest.raises(NSTError, match="do not pass content, style, a mask or a config"):
        stylize(config=StyleConfig(size=32, steps=6), resume=cut_run, progress=False)
