"""`tools/set_url.py` (`make set-url URL=...`) writes the repository's URL everywhere it is used, on a copy.

Each test copies pyproject.toml, README.md and notebooks/*.ipynb into tmp_path and runs the script there (never on
the working tree): every place holds the new URL, each notebook differs only in its install cell (cell 1), a second
run changes no byte, bad input changes nothing, and the install cell itself, run with nst_utils missing, calls pip
for a real URL and prints one line for the placeholder. The Pages workflow takes the URL from the CI context.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_notebooks_intro import INSTALL_CELL

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("set_url", ROOT / "tools" / "set_url.py")
set_url = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(set_url)

URL = "https://github.com/Alice/nst-utils"
PLACEHOLDER = "https://github.com/OWNER/nst-utils"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Return a copy of the files the script rewrites (pyproject.toml, README.md, notebooks/*.ipynb)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copyfile(path, tmp_path / "notebooks" / path.name)
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    """Return every file under root by relative path, as bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _canonical(nb: dict) -> str:
    """Return a notebook as nbformat writes it (one-space indent, sorted keys, non-ASCII kept, final newline)."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def _run(root: Path, *args: str) -> int:
    """Run the script's main() on a copy and return its exit status."""
    return set_url.main([*args, "--root", str(root)])


def test_sets_every_place_and_a_second_run_changes_nothing(repo, capsys):
    before = _snapshot(repo)
    assert _run(repo, URL + ".git/") == 0  # normalised: no .git, no trailing slash
    after = _snapshot(repo)

    pyproject = after["pyproject.toml"].decode()
    assert re.findall(r'^Repository = "([^"]+)"$', pyproject, re.M) == [URL]
    readme = after["README.md"].decode()
    assert readme.count("https://alice.github.io/nst-utils/") == 1
    assert "on its site: <https://alice.github.io/nst-utils/>** (built from this repository" in readme
    names = sorted(n for n in before if n.startswith("notebooks/"))
    assert len(names) >= 8
    for name in ("pyproject.toml", "README.md", *names):
        assert PLACEHOLDER not in after[name].decode() and "OWNER.github.io/nst-utils" not in after[name].decode(), name
    for name in names:
        old, new = json.loads(before[name]), json.loads(after[name])
        cell = new["cells"][1]
        assert "".join(cell["source"]) == INSTALL_CELL.format(url=URL), name
        assert cell["outputs"] == [] and cell["execution_count"] is None, name
        # every other byte is the original's: the old notebook with only cell 1 replaced, in nbformat's layout
        assert _canonical(old) == before[name].decode(), f"{name}: the copy is not in nbformat's layout"
        old["cells"][1] = cell
        assert after[name].decode() == _canonical(old), name

    capsys.readouterr()
    assert _run(repo, URL) == 0
    assert _snapshot(repo) == after
    assert "every file already set" in capsys.readouterr().out
    assert _run(repo, "--check") == 0  # no URL: pyproject's, already everywhere


def test_back_to_the_placeholder_and_no_url_reapplies_pyproject(repo):
    assert _run(repo, URL) == 0
    assert _run(repo, PLACEHOLDER) == 0
    readme = (repo / "README.md").read_text(encoding="utf-8")
    site_line = next(line for line in readme.splitlines() if line.startswith("**Read the tutorial executed"))
    assert "github.io" not in site_line and "make set-url URL=" in site_line  # no address while there is none
    assert "alice" not in readme.lower()
    nb = json.loads((repo / "notebooks" / "02_images.ipynb").read_text(encoding="utf-8"))
    assert "".join(nb["cells"][1]["source"]) == INSTALL_CELL.format(url=PLACEHOLDER)

    # an older install cell (as committed before this format) is brought up to date by a run without a URL
    nb["cells"][1]["source"] = ["import sys\n", "# installs nst_utils from somewhere else"]
    path = repo / "notebooks" / "02_images.ipynb"
    path.write_text(_canonical(nb), encoding="utf-8")
    assert _run(repo, "--check") == 1
    assert _run(repo) == 0
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert "".join(nb["cells"][1]["source"]) == INSTALL_CELL.format(url=PLACEHOLDER)


@pytest.mark.parametrize(
    "url",
    [
        "http://github.com/alice/nst-utils",
        "https://gitlab.com/alice/nst-utils",
        "https://github.com/alice",
        "https://github.com/alice/nst-utils/tree/main",
        "github.com/alice/nst-utils",
        "https://github.com/-alice/nst-utils",
        "https://github.com/alice/..",
    ],
)
def test_a_bad_url_is_refused_in_one_line_and_changes_nothing(repo, capsys, url):
    before = _snapshot(repo)
    assert _run(repo, url) == 2
    err = capsys.readouterr().err
    assert err.startswith("set_url: not a GitHub repository URL") and err.count("\n") == 1, err
    assert _snapshot(repo) == before


def test_a_notebook_without_the_install_cell_stops_it_before_any_file_is_written(repo, capsys):
    path = repo / "notebooks" / "03_losses.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"][1], nb["cells"][2] = nb["cells"][2], nb["cells"][1]  # someone moved the install cell
    path.write_text(_canonical(nb), encoding="utf-8")
    before = _snapshot(repo)
    assert _run(repo, URL) == 2
    assert "notebooks/03_losses.ipynb: cell 1 is not the install cell" in capsys.readouterr().err
    assert _snapshot(repo) == before  # pyproject and README too: all is checked before anything is written


def test_site_address_from_the_repository_url():
    assert set_url.site_url("https://github.com/Alice/nst-utils") == "https://alice.github.io/nst-utils/"
    assert set_url.site_url("https://github.com/alice/alice.github.io") == "https://alice.github.io/"
    assert set_url.normalise(" https://github.com/alice/nst-utils.git/ ") == "https://github.com/alice/nst-utils"
    assert set_url.is_placeholder(PLACEHOLDER) and not set_url.is_placeholder(URL)


@pytest.mark.parametrize(
    ("url", "installed", "pip", "printed"),
    [
        (URL, False, ["nst-utils @ git+" + URL], ""),  # Colab, a real URL: pip installs from it
        (PLACEHOLDER, False, [], "nst_utils is not installed: run this notebook from a clone"),  # no pip failure
        (PLACEHOLDER, True, [], ""),  # a clone: nothing to do
    ],
    ids=["real-url", "placeholder", "installed"],
)
def test_install_cell_runs_pip_only_for_a_real_url(monkeypatch, capsys, url, installed, pip, printed):
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real_find_spec(name) if installed else None)
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    exec(compile(INSTALL_CELL.format(url=url), "install cell", "exec"), {})
    assert [cmd[-1] for cmd in calls] == pip
    assert all(cmd[:5] == [sys.executable, "-m", "pip", "install", "-q"] for cmd in calls)
    out = capsys.readouterr().out
    assert out.startswith(printed) and out.count("\n") == (1 if printed else 0), out


def test_pages_workflow_and_make_take_the_url_from_outside():
    workflow = (ROOT / ".github" / "workflows" / "pages.yml").read_text(encoding="utf-8")
    steps = re.split(r"\n      - ", workflow.split("\n    steps:\n", 1)[1])  # the build job's steps, in order
    at_url = next(i for i, s in enumerate(steps) if re.search(r"run: python tools/set_url\.py ", s))
    at_book = next(i for i, s in enumerate(steps) if re.search(r"run: make book\b", s))
    assert "${{ github.server_url }}/${{ github.repository }}" in steps[at_url]
    assert at_url < at_book  # the site is built with the fork's URL
    caches = [i for i, s in enumerate(steps) if "actions/cache" in s]
    assert all(at_url < i for i in caches)  # the cache keys see the rewritten notebooks
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        [make, "-n", "set-url", f"URL={URL}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(rf"tools/set_url\.py {re.escape(URL)}$", out, re.M), out
