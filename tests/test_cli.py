"""The `nst` command end to end, as a user runs it."""

import json
import subprocess
import sys

from PIL import Image


def nst(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nst_utils", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_stylize_writes_png_of_requested_size(tmp_path):
    out, log = tmp_path / "out" / "r.png", tmp_path / "h.json"
    r = nst(
        "stylize", "--size", "96", "--steps", "4", "-o", str(out), "--log", str(log), "-q", "--precision", "bfloat16"
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (96, 50)  # japanese_garden is 960x498
    hist = json.loads(log.read_text())
    assert len(hist["history"]["total"]) == 4 and hist["config"]["size"] == 96
    assert hist["config"]["precision"] == "bfloat16"
    assert "wrote" in r.stdout and "peak memory" in r.stdout
    assert r.stderr == ""  # a good quiet run prints nothing there: no TensorFlow log line (the loop once had one)


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    r = nst("stylize", "--style-layers", "block9_conv1", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "block5_conv1" in r.stderr
    assert "Traceback" not in r.stderr
    r = nst("stylize", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "missing.jpg" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()
    r = nst("stylize", "--precision", "float8", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "bfloat16" in r.stderr


def test_info_and_help():
    r = nst("info")
    assert r.returncode == 0 and "VGG19 weights" in r.stdout and "TensorFlow" in r.stdout
    assert "precision auto ->" in r.stdout
    r = nst("stylize", "--help")
    assert r.returncode == 0 and "--optimizer" in r.stdout


def test_sweep_writes_a_grid_and_each_image(tmp_path):
    out, d = tmp_path / "grid.png", tmp_path / "imgs"
    r = nst(
        "sweep",
        "--size",
        "48",
        "--steps",
        "6",
        "--ratios",
        "0.1",
        "100",
        "--cumulative-layers",
        "--style-layers",
        "block1_conv1",
        "block3_conv1",
        "-o",
        str(out),
        "--save-dir",
        str(d),
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size[0] > 200
    files = sorted(p.name for p in d.iterdir())
    assert files == ["r0_c0.png", "r0_c1.png", "r1_c0.png", "r1_c1.png"]
    import numpy as np

    low, high = (np.asarray(Image.open(d / f), np.float32) for f in ("r1_c0.png", "r1_c1.png"))
    assert np.abs(low - high).mean() > 1.0  # a thousand times more style weight (normalised VGG19) changes the picture


def test_options_are_made_from_the_config_fields(capsys):
    """Every StyleConfig field with option metadata is a `nst stylize` flag; `nst sweep` takes those it does not vary;
    the typed ones are known (for --resume) and the rest come from the command's and the network's defaults."""
    import dataclasses
    import re

    import pytest

    from nst_utils.cli import build_parser
    from nst_utils.config import StyleConfig

    p = build_parser()
    args = p.parse_args(["stylize", "--lr", "0.05", "--style-statistic", "wasserstein", "--size", "64"])
    assert args.typed == {"learning_rate": 0.05, "style_statistic": "wasserstein", "size": 64}
    assert StyleConfig(**args.settings) == StyleConfig(size=64, learning_rate=0.05, style_statistic="wasserstein")
    assert StyleConfig(**p.parse_args(["stylize"]).settings) == StyleConfig()
    assert StyleConfig(**p.parse_args(["sweep"]).settings) == StyleConfig.normalized(size=256, steps=100)
    for command in ("stylize", "sweep"):
        with pytest.raises(SystemExit):
            p.parse_args([command, "--help"])
        shown = capsys.readouterr().out
        for f in dataclasses.fields(StyleConfig):
            flag = "--" + f.name.replace("_", "-")
            offered = bool(f.metadata) and (command == "stylize" or f.metadata["sweep"])
            listed = re.search(rf"^ +{flag}(?![-\w])", shown, re.M) is not None  # an option line of the help
            assert listed == offered, (command, flag)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["sweep", "--beta", "1"])  # a sweep's betas come from --ratios
    assert exc.value.code == 2 and "--beta" in capsys.readouterr().err
