"""The package's one-way layers (pyproject's import-linter contracts), ruff's lint and format check, and a fast,
TensorFlow-free `nst --help`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    """Return the environment for a child interpreter that imports this checkout's nst_utils."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _python(code: str) -> subprocess.CompletedProcess:
    """Return the run of `code` in a fresh interpreter that imports this checkout's nst_utils, asserting it passed."""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[test]')")
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(args):
    pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[test]')")
    exe = Path(sys.executable).with_name("ruff")
    cmd = [str(exe)] if exe.exists() else [shutil.which("ruff") or "ruff"]
    out = subprocess.run([*cmd, *args, "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_cli_module_and_help_do_not_import_tensorflow():
    code = (
        "import sys, nst_utils.cli\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'h5py', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "try:\n"
        "    nst_utils.cli.main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "try:\n"
        "    nst_utils.cli.main(['stylize', '--size', '-3'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 2, exc.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'h5py', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = _python(code)
    assert "usage: nst" in out.stdout and "--size" in out.stderr


def test_public_names_load_lazily():
    code = (
        "import sys, nst_utils\n"
        "assert 'tensorflow' not in sys.modules\n"
        "from nst_utils import NSTError, StyleConfig, LAYERS\n"
        "assert 'tensorflow' not in sys.modules\n"
        "assert sorted(nst_utils.__all__) == nst_utils.__all__ and 'stylize' in dir(nst_utils)\n"
    )
    _python(code)


def test_no_function_level_relative_imports_beyond_the_documented_few():
    """Only the CLI's commands (the engine, once arguments are checked) and `write_outputs`' loss plot import inside
    functions."""
    allowed = {
        ("cli.py", "from .run import stylize"),
        ("cli.py", "from .plots import"),
        ("cli.py", "from .sweep import"),
        ("cli.py", "from .video import"),
        ("cli.py", "from .model import describe_devices"),
        ("run.py", "from .plots import save_loss_plot"),
    }
    found = []
    for path in sorted((ROOT / "nst_utils").glob("*.py")):
        for line in path.read_text().splitlines():
            if line.startswith("    ") and line.strip().startswith("from ."):
                if not any(path.name == f and line.strip().startswith(s) for f, s in allowed):
                    found.append(f"{path.name}: {line.strip()}")
    assert not found, found
