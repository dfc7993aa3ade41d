"""A user's files are never the output: outputs that alias an input or each other, names the file system cannot hold,
a closed terminal (SIGHUP), closed pipes and stdout encodings.

Each refusal is checked to come before any work (the CLI never gets as far as importing TensorFlow, the API never
plans a run) and to leave every input byte-identical and the folder as it was. Runs that must finish are 32 px.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import nst_in_process, synthetic_image
from PIL import Image
from test_robustness import ROOT, _start_cli, assert_one_line_error, assert_valid_png, default_signals

from nst_utils import NSTError, assets, cli, outputs
from nst_utils.checkpoint import load


def _png(path: Path, seed: int) -> Path:
    """Return `path` after writing a small synthetic PNG there (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((synthetic_image(40, 56, seed) * 255).astype("uint8")).save(path)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    """Return {relative path: bytes (b"-> target" for a link)} of every file under `folder`."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            found[str(p.relative_to(folder))] = b"-> " + os.fsencode(os.readlink(p))
        elif p.is_file():
            found[str(p.relative_to(folder))] = p.read_bytes()
    return found


@pytest.fixture
def no_work(monkeypatch):
    """Make any work fail the test: the CLI's TensorFlow import and the API's planning of a run."""

    def work(*args, **kwargs):
        pytest.fail("the refusal came after the work had started")

    monkeypatch.setattr(cli, "import_tensorflow", work)
    run = sys.modules.get("nst_utils.run")
    if run is not None:
        monkeypatch.setattr(run, "plan", work)


@pytest.fixture
def pictures(tmp_path, monkeypatch) -> Path:
    """Return a folder (the working directory) holding c.png, s.png, s2.png, sub/o_0002.png and the links to c.png:
    link.png and sub/q_0002.png (symbolic), hard.png (hard)."""
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "c.png", 1)
    _png(tmp_path / "s.png", 2)
    _png(tmp_path / "s2.png", 3)
    _png(tmp_path / "sub" / "o_0002.png", 4)
    (tmp_path / "link.png").symlink_to("c.png")
    (tmp_path / "sub" / "q_0002.png").symlink_to("../c.png")  # where a --save-every image of -o sub/q.png goes
    os.link(tmp_path / "c.png", tmp_path / "hard.png")
    (tmp_path / "r.ckpt.npz").write_bytes(b"a checkpoint; the alias check reads nothing")
    return tmp_path


STYLIZE = ["stylize", "c.png", "s.png", "--size", "32", "--steps", "2", "-q"]
CASES = {  # (the command, what the one line names)
    "-o is the content": (STYLIZE + ["-o", "c.png"], ["--output c.png", "the content image c.png"]),
    "-o is the style": (STYLIZE + ["-o", "s.png"], ["--output s.png", "the style image s.png"]),
    "--log is -o": (STYLIZE + ["-o", "r.png", "--log", "r.png"], ["--log r.png", "--output r.png"]),
    "--checkpoint is -o": (STYLIZE + ["-o", "r.png", "--checkpoint", "r.png"], ["--checkpoint r.png", "--output"]),
    "--plot is the content": (STYLIZE + ["-o", "r.png", "--plot", "c.png"], ["--plot c.png", "the content image"]),
    "--log is the style": (STYLIZE + ["-o", "r.png", "--log", "s.png"], ["--log s.png", "the style image"]),
    "--log is the default checkpoint": (STYLIZE + ["-o", "r.png", "--log", "r.ckpt.npz"], ["--checkpoint", "--log"]),
    "a --save-every image is the style": (
        ["stylize", "c.png", "sub/o_0002.png", "-o", "sub/o.png", "--save-every", "2", "--size", "32", "-q"],
        ["--save-every", "the style image sub/o_0002.png"],
    ),
    "a --save-every image is a symlink to the content": (
        STYLIZE + ["-o", "sub/q.png", "--save-every", "2"],
        ["--save-every", "sub/q_0002.png", "the content image c.png"],
    ),
    "a --save-every image is --plot": (
        STYLIZE + ["-o", "r.png", "--save-every", "3", "--plot", "r_0006.png"],
        ["--save-every", "--plot r_0006.png"],
    ),
    "-o is a symlink to the content": (STYLIZE + ["-o", "link.png"], ["--output link.png", "the content image"]),
    "-o is the content spelled ./": (STYLIZE + ["-o", "./c.png"], ["--output c.png", "the content image"]),
    "-o is the content spelled sub/..": (STYLIZE + ["-o", "sub/../c.png"], ["the content image c.png"]),
    "-o is a hard link to the content": (STYLIZE + ["-o", "hard.png"], ["--output hard.png", "the content image"]),
    "-o is the second of --style": (
        ["stylize", "c.png", "--style", "s.png", "s2.png", "-o", "s2.png", "--size", "32", "-q"],
        ["--output s2.png", "style image 2 s2.png"],
    ),
    "-o is the mask": (STYLIZE + ["-o", "s2.png", "--style-mask", "s2.png"], ["the style mask s2.png"]),
    "--log is the resumed checkpoint": (
        ["stylize", "--resume", "r.ckpt.npz", "-o", "r.png", "--log", "r.ckpt.npz", "-q"],
        ["--log r.ckpt.npz", "the checkpoint resumed from r.ckpt.npz"],
    ),
    "--checkpoint is the content": (STYLIZE + ["-o", "r.png", "--checkpoint", "c.png"], ["--checkpoint c.png"]),
    "the sweep's grid is the content": (
        ["sweep", "c.png", "s.png", "-o", "c.png", "--size", "32", "-q"],
        ["--output c.png", "the content image c.png"],
    ),
    "a sweep cell is the style": (
        ["sweep", "c.png", "sub/r0_c1.png", "-o", "g.png", "--save-dir", "sub", "--ratios", "1", "2", "--size", "32"],
        ["--save-dir sub/r0_c1.png", "the style image sub/r0_c1.png"],
    ),
    "the sweep's grid is a cell": (
        ["sweep", "c.png", "s.png", "-o", "cells/r0_c0.png", "--save-dir", "cells", "--ratios", "1", "2"],
        ["--save-dir cells/r0_c0.png", "--output cells/r0_c0.png"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_is_an_input_or_another_output_is_refused_before_work(pictures, capsys, no_work, case):
    argv, needles = CASES[case]
    if "sub/r0_c1.png" in argv:
        shutil.copy(pictures / "s.png", pictures / "sub" / "r0_c1.png")
    before = _tree(pictures)
    code, err = nst_in_process(capsys, *argv)
    assert_one_line_error(code, err, "same file", *needles)
    assert _tree(pictures) == before  # every input byte-identical, nothing written, no folder made


def test_a_registry_name_is_an_input_at_the_file_it_resolves_to(tmp_path, capsys, monkeypatch, no_work):
    data = tmp_path / "data"
    data.mkdir()
    for name in assets.default_images():  # the data folder a user points NST_DATA_DIR at
        shutil.copy(assets.image_path(name), data / name)
    monkeypatch.setenv(assets.DATA_DIR_ENV, str(data))
    before = _tree(tmp_path)
    content, style = (str(data / name) for name in assets.default_images())
    code, err = nst_in_process(capsys, "stylize", "-o", content, "--size", "32")
    assert_one_line_error(code, err, "--output", "the content image")
    code, err = nst_in_process(capsys, "sweep", "-o", content, "--save-dir", str(tmp_path / "cells"), "--ratios", "1")
    assert_one_line_error(code, err, "--output", "the content image")
    code, err = nst_in_process(capsys, "stylize", "--plot", style, "-o", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "--plot", "the style image")
    assert _tree(tmp_path) == before


def test_the_api_refuses_an_output_that_is_an_input_before_planning(pictures, no_work):
    import nst_utils.run as run  # the engine (TensorFlow), as an API user imports it

    before = _tree(pictures)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "plan", lambda *a, **k: pytest.fail("planned a run whose output is its content"))
        for kwargs, needle in (
            (dict(output="c.png"), "output= c.png is the same file as the content image"),
            (dict(output=pictures / "link.png"), "the content image"),
            (dict(output="r.png", plot="s.png"), "plot= s.png is the same file as the style image"),
            (dict(output="r.png", checkpoint="r.png"), "checkpoint= r.png is the same file as output="),
            (dict(output="s2.png", init_image="s2.png"), "the init image s2.png"),
            (dict(output="sub/o.png", save_every=1, steps=4, style="sub/o_0002.png"), "the style image sub/o_0002"),
        ):
            kwargs = {"style": "s.png"} | kwargs
            with pytest.raises(NSTError, match=needle):
                run.stylize("c.png", size=32, progress=False, **kwargs)
    assert _tree(pictures) == before


def test_resuming_may_rewrite_the_checkpoint_it_resumed_from(pictures):
    """`--resume r.ckpt.npz -o r.png` writes its checkpoint to r.ckpt.npz again: the normal resume flow (the file is
    read whole before a run starts and replaced atomically); any other output there is refused."""
    inputs = outputs.input_files(resume="r.ckpt.npz")
    outputs.check_outputs(output="r.png", checkpoint="r.ckpt.npz", inputs=inputs)
    outputs.check_outputs(output="r.png", checkpoint="./r.ckpt.npz", inputs=inputs)
    with pytest.raises(NSTError, match="log= r.ckpt.npz is the same file as the checkpoint resumed from"):
        outputs.check_outputs(output="r.png", checkpoint="other.npz", log="r.ckpt.npz", inputs=inputs)
    with pytest.raises(NSTError, match="plot= r.ckpt.npz"):
        outputs.check_outputs(output="r.png", plot="r.ckpt.npz", inputs=inputs)


# ---------------------------------------------------------------- names the file system cannot hold


def test_a_249_byte_output_name_is_written(tmp_path, capsys):
    src = _png(tmp_path / "c.png", 1)
    out = tmp_path / ("a" * 245 + ".png")  # 249 bytes: its old temp name beside it (.NAME.XXXXXXXX.tmp) was 263
    code, err = nst_in_process(
        capsys, "stylize", str(src), str(src), "--size", "32", "--steps", "2", "-q", "-o", str(out)
    )
    assert code == 0, err
    assert_valid_png(out, (32, 23))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.png", out.name])  # no temp file left


@pytest.mark.parametrize(
    "flags,needles",
    [
        (["-o", "a" * 252 + ".png"], ["256 bytes", "choose a shorter --output"]),
        (["-o", "r.png", "--log", "b" * 256], ["256 bytes", "choose a shorter --log"]),
        (["-o", "b" * 250 + ".png"], ["b.ckpt.npz", "259 bytes", "choose a shorter --checkpoint"]),
        (["-o", "c" * 245 + ".png", "--save-every", "1", "--steps", "100000"], ["c_100000.png", "shorter --output"]),
        (["-o", "d" * 300 + "/r.png"], ["the folder name", "300 bytes"]),
    ],
)
def test_a_name_the_file_system_cannot_hold_is_refused_before_work(
    tmp_path, capsys, monkeypatch, no_work, flags, needles
):
    monkeypatch.chdir(tmp_path)
    src = _png(tmp_path / "c.png", 1)
    code, err = nst_in_process(capsys, "stylize", str(src), str(src), "--size", "32", "-q", *flags)
    assert_one_line_error(code, err, *needles)
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]


def test_temp_and_fallback_names_always_fit(tmp_path, monkeypatch):
    limit = outputs.name_max(tmp_path)
    longest = tmp_path / ("é" * ((limit - 4) // 2) + ".png")  # every byte of the name used, two per character
    outputs.write_text("x", longest)
    assert longest.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == [longest.name]
    cut = outputs.fitted_name(longest.name, 101)
    assert len(os.fsencode(cut)) <= 101 and cut.endswith(".png") and cut.encode().decode() == cut  # whole characters
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    outputs.fallback_dir.cache_clear()
    monkeypatch.setattr(outputs, "name_max", lambda folder: 64 if "nst-kept-" in str(folder) else limit)
    with pytest.raises(outputs.WriteError, match="wrote it to") as failed:  # a read-only target: kept in the fallback
        outputs.write_text("y", Path("/proc/self/nst-test") / longest.name)
    assert failed.value.kept.read_text() == "y" and len(os.fsencode(failed.value.kept.name)) <= 64
    outputs.fallback_dir.cache_clear()


# ---------------------------------------------------------------- signals


def test_sighup_keeps_the_best_image_and_a_checkpoint_that_resumes(tmp_path, capsys):
    p, out = _start_cli(tmp_path)
    p.send_signal(signal.SIGHUP)
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 129, stderr.decode(errors="replace")[-2000:]
    assert b"kept the best image" in stderr and b"Traceback" not in stderr
    assert_valid_png(out, (32, 24))
    ckpt = out.with_name("o.ckpt.npz")
    steps, saved = load(ckpt).step, ckpt.read_bytes()
    code, err = nst_in_process(
        capsys, "stylize", "--resume", str(ckpt), "-o", str(out), "--steps", str(steps + 2), "-q"
    )  # the default checkpoint is the one resumed from: allowed
    assert code == 0, err
    assert ckpt.read_bytes() == saved  # written only when a resumed run is stopped again


def _hung_up(tmp_path: Path, keep_hup_ignored: bool = False) -> tuple[subprocess.Popen, int, Path]:
    """Return an `nst stylize` of many steps on a new terminal of its own (a pty, its controlling terminal) once its
    progress bar shows a loss, the terminal's master side, and the output path."""
    src = _png(tmp_path / "c.png", 1)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing 0 columns wide

    def own_terminal():
        default_signals()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if keep_hup_ignored:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts it

    out = tmp_path / "o.png"
    argv = [sys.executable, "-m", "nst_utils", "stylize", str(src), str(src), "--size", "32", "--steps", "100000"]
    p = subprocess.Popen(
        [*argv, "-o", str(out)],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=own_terminal,
    )
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 300  # a safety net for a hung child, not a timing assertion
    while b"loss=" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
    assert b"loss=" in seen, seen.decode(errors="replace")[-2000:]
    return p, master, out


def test_closing_the_terminal_keeps_the_best_image_and_the_checkpoint(tmp_path):
    p, master, out = _hung_up(tmp_path)
    os.close(master)  # the terminal closes: the kernel hangs it up, SIGHUP, and every later write fails (EIO)
    assert p.wait(timeout=300) == 129
    assert_valid_png(out, (32, 23))
    assert load(out.with_name("o.ckpt.npz")).step > 0


def test_nohup_keeps_running_after_sighup(tmp_path):
    p, master, out = _hung_up(tmp_path, keep_hup_ignored=True)
    p.send_signal(signal.SIGHUP)
    seen = b""
    while seen.count(b"loss=") < 3:  # it goes on: more progress after the signal
        seen += os.read(master, 4096)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    while p.poll() is None:  # read what it writes meanwhile: a full terminal buffer would block it
        if select.select([master], [], [], 0.5)[0]:
            try:
                os.read(master, 4096)
            except OSError:
                break
    assert p.wait(timeout=300) == 143
    os.close(master)
    assert_valid_png(out, (32, 23))


# ---------------------------------------------------------------- pipes and encodings


@pytest.mark.parametrize("argv", [["info"], ["fetch"]])
def test_a_closed_pipe_ends_quietly(argv):
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first byte (`| head -c 0`; `| head -1` a line later)
    p = subprocess.run(
        [sys.executable, "-m", "nst_utils", *argv], stdout=write, stderr=subprocess.PIPE, cwd=ROOT, timeout=300
    )
    os.close(write)
    assert p.returncode in (0, 141)
    assert p.stderr == b"", p.stderr.decode(errors="replace")


def test_a_closed_stdout_keeps_the_result_and_its_exit_code(tmp_path, capsys, monkeypatch):
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    src, style = _png(tmp_path / "c.png", 1), _png(tmp_path / "s.png", 2)  # a photo unlike its style: the run moves
    monkeypatch.setattr(sys, "stdout", Closed())
    code = cli.main(
        ["stylize", str(src), str(style), "--size", "32", "--steps", "2", "-q", "-o", str(tmp_path / "r.png")]
    )
    assert code == 0 and capsys.readouterr().err == ""
    assert_valid_png(tmp_path / "r.png", (32, 23))


@pytest.mark.parametrize("code,said", [(errno.EPIPE, ""), (errno.ENOSPC, "could not print all of the output")])
def test_a_failing_stdout_is_named_unless_its_reader_has_gone(capsys, monkeypatch, code, said):
    class Failing(io.StringIO):
        def write(self, text):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sys, "stdout", Failing())
    assert cli.main(["fetch"]) == 0
    err = capsys.readouterr().err
    assert (said in err and err.count("\n") == 1) if said else err == "", err


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii:strict"}, {"LC_ALL": "C"}])
def test_a_name_that_is_not_utf8_prints_under_any_encoding(tmp_path, env):
    src, style = _png(tmp_path / "c.png", 1), _png(tmp_path / "s.png", 2)  # a photo unlike its style: the run moves
    out = os.path.join(os.fsencode(tmp_path), b"r\xff\xc3\xa9.png")  # an undecodable byte, then an é
    argv = [sys.executable, "-m", "nst_utils", "stylize", str(src), str(style), "--size", "32", "--steps", "2", "-q"]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LC_ALL", "LANG", "LC_CTYPE")}
    p = subprocess.run([*argv, "-o", out], capture_output=True, cwd=ROOT, timeout=300, env=clean | env)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode(errors="replace")
    assert_valid_png(Path(os.fsdecode(out)), (32, 23))
    escaped, raw = rb"r\xff\xc3\xa9.png", b"r\xff\xc3\xa9.png"  # ASCII: escaped bytes; C (UTF-8 mode): the bytes
    assert (escaped if "PYTHONIOENCODING" in env else raw) in p.stdout, p.stdout


def test_a_refusal_naming_such_a_file_is_one_line(tmp_path, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    src = _png(tmp_path / "c.png", 1)
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stderr", err)
    name = os.fsdecode(b"r\xff.png")
    code = cli.main(["stylize", str(src), str(src), "-o", name, "--log", name])
    err.flush()
    assert code == 2
    assert err.buffer.getvalue().startswith(rb"nst: error: --log r\xff.png is the same file as --output r\xff.png")


FINISHING = """
import os, signal, sys
from nst_utils import cli, outputs, run
write = outputs.save_image

def save_after_a_signal(image, path):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # the user's signal arrives as the finished result is written
    return write(image, path)

run.save_image = save_after_a_signal  # the name stylize's write_outputs calls
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_signal_while_the_result_is_written_keeps_it(tmp_path, sig, code):
    src = _png(tmp_path / "c.png", 2)
    out, log = tmp_path / "o.png", tmp_path / "o.json"
    argv = ["stylize", str(src), str(src), "--size", "32", "--steps", "3", "-q", "-o", str(out), "--log", str(log)]
    p = subprocess.run(
        [sys.executable, "-c", FINISHING, sig, *argv],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        preexec_fn=default_signals,
    )
    stderr = p.stderr.decode(errors="replace")
    assert p.returncode == code, stderr[-2000:]
    assert "after the run finished; its outputs are written" in stderr and "Traceback" not in stderr
    assert_valid_png(out, (32, 23))  # the finished result, not thrown away
    assert log.is_file() and '"history"' in log.read_text()
