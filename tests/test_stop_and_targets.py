"""`nst` stops when told while it is blocked before a run, and never writes over what is not a plain file.

Signals: a real `nst` subprocess blocked on a FIFO input (content, style, mask, checkpoint) or on a download from a
local HTTP server that accepts and never answers; one SIGTERM must end it at once (exit 143, one line, no output).
Output targets: FIFOs, folders, symlinks and unknown extensions in tmp_path, refused before any work or written
through a symlink as `cp` does. Nothing here touches /dev.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import nst_in_process as _cli
from PIL import Image

import nst_utils.run as opt
from nst_utils import NSTError, outputs, stylize

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "images"
WAIT_S = 240  # a safety net for a child that never gets where the test waits (TensorFlow's start-up), not a timing


def _env(**changes: str | None) -> dict[str, str]:
    """Return this process's environment with `changes` applied (None removes a variable)."""
    env = dict(os.environ)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _blocked_on_fifo(pid: int) -> bool:
    """Return True while the process's main thread waits in open() for a FIFO's writer."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in ("wait_for_partner", "fifo_open", "pipe_wait")
    except OSError:
        return False


def _sigterm_ends_it(p: subprocess.Popen, out: Path) -> None:
    """Send SIGTERM after 2 s more and check the process ends within 2 s: exit 143, one line, no output file."""
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    t = time.monotonic()
    try:
        _, err = p.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"still running 2 s after SIGTERM: {err.decode(errors='replace')[-1500:]}")
    ended = time.monotonic() - t
    text = err.decode(errors="replace").strip()
    assert p.returncode == 143, text[-1500:]
    assert text.count("\n") == 0 and text.startswith("nst:") and "Traceback" not in text, text[-1500:]
    assert ended < 2
    assert not out.exists() and not [q.name for q in out.parent.iterdir() if q.suffix == ".tmp"]


@pytest.mark.parametrize("which", ["content", "style", "mask", "resume"])
def test_sigterm_while_reading_a_fifo_stops_at_once(tmp_path, which):
    fifo = tmp_path / ("in.ckpt.npz" if which == "resume" else "in.png")
    os.mkfifo(fifo)
    out = tmp_path / "out" / "o.png"
    (out.parent).mkdir()
    img = str(SHARED_IMAGES / "tubingen.jpg") if SHARED_IMAGES.is_dir() else "tubingen.jpg"
    argv = {
        "content": [str(fifo), img],
        "style": [img, str(fifo)],
        "mask": [img, img, "--style-mask", str(fifo)],
        "resume": ["--resume", str(fifo)],
    }[which]
    p = subprocess.Popen(
        [sys.executable, "-m", "nst_utils", "stylize", *argv, "--size", "32", "--steps", "2", "-q", "-o", str(out)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + WAIT_S
    while not _blocked_on_fifo(p.pid):
        assert p.poll() is None, p.communicate()[1].decode(errors="replace")[-1500:]
        assert time.monotonic() < deadline, "nst never opened the FIFO"
        time.sleep(0.05)
    _sigterm_ends_it(p, out)


class SilentServer:
    """An HTTP server on 127.0.0.1 that accepts connections and never answers (a stalled download source)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        """Accept connections and hold them open without a byte of answer."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        """Close the listening socket and every held connection."""
        for c in [self.sock, *self.conns]:
            c.close()


PATCHED = """
import sys
from nst_utils import assets, cli
url = sys.argv[1]
if sys.argv[2] == "image":
    assets.registry()["images"]["tubingen.jpg"]["url"] = url + "/tubingen.jpg"
else:
    assets.WEIGHTS_URL = url + "/" + assets.WEIGHTS_FILE
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("what", ["image", "weights"])
def test_sigterm_during_a_stalled_download_stops_at_once(tmp_path, what):
    server = SilentServer()
    out = tmp_path / "o.png"
    if what == "image":  # tubingen.jpg by name, not in NST_DATA_DIR nor the cache: downloaded from the server
        env = _env(NST_DATA_DIR=None, NST_CACHE_DIR=str(tmp_path / "cache"))
        style = str(SHARED_IMAGES / "starry_night.jpg") if SHARED_IMAGES.is_dir() else "starry_night.jpg"
        argv = ["stylize", "tubingen.jpg", style]
    else:  # no weights anywhere: Keras' download, pointed at the server
        env = _env(NST_VGG19_WEIGHTS=None, KERAS_HOME=str(tmp_path / "keras"))
        argv = ["stylize"]
    try:
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PATCHED,
                f"http://127.0.0.1:{server.port}",
                what,
                *argv,
                "--size",
                "32",
                "--steps",
                "2",
                "-q",
                "-o",
                str(out),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + WAIT_S
        while not server.accepted.wait(0.1):
            assert p.poll() is None, p.communicate()[1].decode(errors="replace")[-1500:]
            assert time.monotonic() < deadline, "nst never connected"
        _sigterm_ends_it(p, out)
    finally:
        server.close()


# ---------------------------------------------------------------- output targets


def _no_run(monkeypatch) -> list:
    """Return a list that grows if the CLI gets as far as the engine (it must not)."""
    called: list = []
    monkeypatch.setattr(opt, "stylize", lambda *a, **k: called.append(1))
    return called


@pytest.mark.parametrize("flag", ["-o", "--log", "--plot", "--checkpoint"])
def test_fifo_socket_or_folder_as_an_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch, flag):
    called = _no_run(monkeypatch)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        for target, what in ((fifo, "FIFO"), (sock_path, "socket"), (tmp_path, "directory")):
            argv = ["stylize", "-o", str(tmp_path / "ok.png")] if flag != "-o" else ["stylize"]
            code, err = _cli(capsys, *argv, flag, str(target), "-q")
            assert code == 2 and err.count("\n") == 1 and err.startswith("nst: error:"), err
            assert str(target) in err and what in err, err
        assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISSOCK(sock_path.stat().st_mode)  # both left as they were
        assert not called and not (tmp_path / "ok.png").exists()
    finally:
        server.close()


def test_unknown_extension_is_refused_with_the_formats_that_work(tmp_path, capsys, monkeypatch):
    called = _no_run(monkeypatch)
    for flag in ("-o", "--plot"):
        argv = ["stylize", "-o", str(tmp_path / "ok.png")] if flag != "-o" else ["stylize"]
        code, err = _cli(capsys, *argv, flag, str(tmp_path / "out.txt"), "-q")
        assert code == 2 and err.count("\n") == 1, err
        assert "out.txt" in err and ".txt is not an image format" in err and ".png" in err and ".jpg" in err, err
    assert not called and not list(tmp_path.iterdir())
    with pytest.raises(NSTError, match=r"\.txt is not an image format"):
        stylize(output=tmp_path / "api.txt")  # the API refuses before loading anything
    with pytest.raises(NSTError, match=r"\.txt is not an image format"):
        outputs.save_image(np.zeros((4, 4, 3), np.float32), tmp_path / "direct.txt")


def test_a_dangling_parent_is_refused(tmp_path, capsys, monkeypatch):
    called = _no_run(monkeypatch)
    (tmp_path / "gone").symlink_to(tmp_path / "missing-folder")
    code, err = _cli(capsys, "stylize", "-o", str(tmp_path / "gone" / "o.png"), "-q")
    assert code == 2 and err.count("\n") == 1 and "gone" in err and "does not exist" in err, err
    assert not called and not (tmp_path / "missing-folder").exists()


def test_api_refuses_non_regular_targets_before_work(tmp_path):
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    for kw in ("output", "plot", "checkpoint"):
        with pytest.raises(NSTError, match="FIFO"):
            stylize(**({kw: fifo} if kw == "output" else {"output": tmp_path / "ok.png", kw: fifo}))
    (tmp_path / "ok_0002.png").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "ok_0002.png")  # an image a previous --save-every run left is now a FIFO
    with pytest.raises(NSTError, match="ok_0002.png"):
        stylize(output=tmp_path / "ok.png", save_every=2)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["f.png", "ok_0002.png"]


def test_writer_never_renames_over_a_fifo_made_meanwhile(tmp_path, monkeypatch):
    """A FIFO that appears at the target after the checks is not replaced: the content goes to the fallback folder."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    outputs.fallback_dir.cache_clear()
    out = tmp_path / "o.png"

    def write(f):
        f.write(b"data")
        if not out.exists():
            os.mkfifo(out)  # the race: something else makes a FIFO there while we write

    with pytest.raises(outputs.WriteError, match="FIFO") as exc:
        outputs.atomic_write(out, write)
    outputs.fallback_dir.cache_clear()
    assert stat.S_ISFIFO(out.stat().st_mode) and exc.value.kept.read_bytes() == b"data"
    assert [q.name for q in tmp_path.iterdir() if q.suffix == ".tmp"] == []


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_output_is_written_through_to_its_target(tmp_path, dangling):
    target = tmp_path / "real" / "target.png"
    target.parent.mkdir()
    if not dangling:
        outputs.save_image(np.zeros((4, 4, 3), np.float32), target)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    outputs.check_outputs(output=link)  # accepted
    outputs.save_image(np.ones((6, 5, 3), np.float32), link)
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays a link
    with Image.open(target) as im:  # its target holds the new image
        assert im.size == (5, 6) and np.asarray(im).min() == 255
    assert sorted(q.name for q in target.parent.iterdir()) == ["target.png"]  # no temp file left beside it


def test_symlink_to_a_fifo_is_refused(tmp_path, capsys, monkeypatch):
    called = _no_run(monkeypatch)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.png").symlink_to(tmp_path / "fifo")
    code, err = _cli(capsys, "stylize", "-o", str(tmp_path / "link.png"), "-q")
    assert code == 2 and "FIFO" in err and "link.png" in err, err
    assert not called and (tmp_path / "link.png").is_symlink()


def test_sweep_refuses_bad_grid_and_cell_targets_before_work(tmp_path, capsys, monkeypatch):
    import nst_utils.sweep as sweep_mod

    called = []
    monkeypatch.setattr(sweep_mod, "sweep", lambda *a, **k: called.append(1))
    os.mkfifo(tmp_path / "grid.png")
    code, err = _cli(capsys, "sweep", "-o", str(tmp_path / "grid.png"), "-q")
    assert code == 2 and "FIFO" in err, err
    cells = tmp_path / "cells"
    cells.mkdir()
    os.mkfifo(cells / "r0_c1.png")
    code, err = _cli(capsys, "sweep", "-o", str(tmp_path / "g.png"), "--save-dir", str(cells), "-q")
    assert code == 2 and "r0_c1.png" in err and "FIFO" in err, err
    code, err = _cli(capsys, "sweep", "-o", str(tmp_path / "g.txt"), "-q")
    assert code == 2 and ".txt is not an image format" in err, err
    assert not called


def test_jpeg_plot_and_figure_follow_the_extension(tmp_path):
    from nst_utils import plots

    history = {k: [3.0, 2.0, 1.0] for k in ("content", "style", "tv", "total")}
    for name, fmt in (("p.png", "PNG"), ("p.jpg", "JPEG"), ("p.webp", "WEBP")):
        plots.save_loss_plot(history, tmp_path / name, "loss")
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
