"""Set the repository's public URL everywhere this project uses it: `make set-url URL=https://github.com/OWNER/NAME`.

The URL is kept in pyproject.toml's `[project.urls] Repository`; this script writes it, and what derives from it,
into every place that holds a copy:

- pyproject.toml: `[project.urls] Repository` (the one place it is read from);
- notebooks/*.ipynb: the install cell (cell 1), rewritten whole from INSTALL_CELL; no other byte of the file changes
  (the cell is spliced into the file's text, which nbformat's layout makes possible) and it stays without outputs;
- README.md: the site line, the one line that starts with SITE_LINE_PREFIX: the site's address,
  https://OWNER.github.io/NAME/, derived from the URL.

book/conf.py reads pyproject (the notebook pages' View source / Download / Run in Colab links, the repository
button, `@REPOSITORY@` in book/*.md), so the site follows; the Pages workflow runs this script with the URL of the
repository it runs in, so a fork's site links to the fork. Without a URL the script applies pyproject's again (after
INSTALL_CELL or the site line changed here). A second run changes nothing. Every file is checked and rewritten in
memory first: bad input, or a file not in the expected shape, stops the script with one line before anything is
written; each file is then replaced atomically.

The placeholder https://github.com/OWNER/nst-utils is a valid URL here: the install cell then prints how to
install from a clone instead of calling pip, and the README's site line names no address.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER_OWNER = "OWNER"
# GitHub's rules: an account is 1-39 letters, digits and inner single hyphens; a repository name is letters, digits,
# '.', '_' and '-' (not '.' or '..').
GITHUB_URL = re.compile(r"https://github\.com/([A-Za-z0-9](?:-?[A-Za-z0-9]){0,38})/([A-Za-z0-9._-]{1,100})")

INSTALL_CELL = """# In Colab or a fresh environment, install the tutorial's package first (a clone already has it).
import importlib.util
import subprocess
import sys

REPOSITORY = "{url}"  # `make set-url URL=...` writes it
if importlib.util.find_spec("nst_utils") is None:
    if "/OWNER/" in REPOSITORY:  # a placeholder: nothing to install from
        print("nst_utils is not installed: run this notebook from a clone (`pip install -e .`), or set REPOSITORY")
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "nst-utils @ git+" + REPOSITORY], check=True)"""

SITE_LINE_PREFIX = "**Read the tutorial executed, with every figure, on its site"
SITE_LINE = SITE_LINE_PREFIX + ": <{site}>** (built from this repository by `make book`)."
SITE_LINE_UNSET = (
    SITE_LINE_PREFIX + "**, which `make book` builds into `build/book/html/`; this copy names no public address yet "
    "(`make set-url URL=https://github.com/<owner>/<name>` sets it)."
)


class SetUrlError(ValueError):
    """A URL or a file this script cannot use; its message is the one line the command prints."""


def normalise(url: str) -> str:
    """Return the repository URL as https://github.com/OWNER/NAME, or raise SetUrlError saying what is wrong."""
    url = url.strip().removesuffix("/").removesuffix(".git")
    match = GITHUB_URL.fullmatch(url)
    if match is None or match.group(2) in (".", ".."):
        raise SetUrlError(
            f"not a GitHub repository URL: {url!r} (expected https://github.com/OWNER/NAME: the site's address, "
            "https://OWNER.github.io/NAME/, and the Colab links are made from it)"
        )
    return url


def is_placeholder(repository: str) -> bool:
    """Return whether the repository URL is the placeholder (its owner is literally OWNER)."""
    return normalise(repository).split("/")[3] == PLACEHOLDER_OWNER


def site_url(repository: str) -> str:
    """Return the GitHub Pages address of a repository: https://owner.github.io/NAME/ (the root for owner.github.io)."""
    owner, name = normalise(repository).split("/")[3:5]
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if name.lower() == host else f"https://{host}/{name}/"


def install_cell(repository: str) -> str:
    """Return the source of the notebooks' install cell (cell 1) for this repository URL."""
    return INSTALL_CELL.format(url=normalise(repository))


def site_line(repository: str) -> str:
    """Return the README's site line: the site's address, or how to build the site while the URL is a placeholder."""
    return SITE_LINE_UNSET if is_placeholder(repository) else SITE_LINE.format(site=site_url(repository))


# --- pyproject.toml ------------------------------------------------------------------------------------------------


def _urls_section(lines: list[str]) -> tuple[int, int]:
    """Return the line span (start, end) of the [project.urls] table's body, or raise SetUrlError."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "[project.urls]") + 1
    except StopIteration:
        raise SetUrlError("pyproject.toml has no [project.urls] table") from None
    end = next((i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    return start, end


def _url_key(line: str) -> str | None:
    """Return the key a `Key = "value"` line of [project.urls] sets, or None for comments and blank lines."""
    match = re.match(r'\s*([A-Za-z][\w.-]*)\s*=\s*"[^"]*"\s*(#.*)?$', line)
    return match.group(1) if match else None


def read_repository(pyproject: str) -> str:
    """Return `[project.urls] Repository` from pyproject.toml's text (no tomllib: Python 3.10 lacks it)."""
    lines = pyproject.splitlines()
    start, end = _urls_section(lines)
    for line in lines[start:end]:
        if _url_key(line) == "Repository":
            return re.search(r'"([^"]*)"', line).group(1)
    raise SetUrlError("pyproject.toml's [project.urls] has no Repository")


def set_pyproject(pyproject: str, repository: str) -> str:
    """Return pyproject.toml's text with [project.urls] Repository set (every other byte kept)."""
    lines = pyproject.splitlines(keepends=True)
    start, end = _urls_section([line.rstrip("\r\n") for line in lines])
    at = [i for i in range(start, end) if _url_key(lines[i]) == "Repository"]
    if not at:
        raise SetUrlError("pyproject.toml's [project.urls] has no Repository")
    lines[at[0]] = re.sub(r'"[^"]*"', json.dumps(normalise(repository)), lines[at[0]], count=1)
    return "".join(lines)


# --- notebooks and README ------------------------------------------------------------------------------------------


def _cell_block(cell: dict) -> str:
    """Return a cell as nbformat writes it inside a notebook (one-space indent, sorted keys, at depth 2)."""
    lines = json.dumps(cell, sort_keys=True, indent=1, ensure_ascii=False).split("\n")
    return "\n".join([lines[0]] + ["  " + line for line in lines[1:]])


def set_notebook(text: str, repository: str, name: str) -> str:
    """Return a notebook's text with cell 1 (the install cell) rewritten for this URL and every other byte kept."""
    cells = json.loads(text).get("cells", [])
    cell = cells[1] if len(cells) > 1 else None
    source = "".join(cell["source"]) if cell and isinstance(cell.get("source"), list) else None
    if cell is None or cell.get("cell_type") != "code" or source is None or "nst_utils" not in source:
        raise SetUrlError(f"{name}: cell 1 is not the install cell (a code cell that installs nst_utils); not changed")
    new = dict(cell, source=install_cell(repository).splitlines(keepends=True), outputs=[], execution_count=None)
    old_block, new_block = _cell_block(cell), _cell_block(new)
    if text.count(old_block) != 1:
        raise SetUrlError(f"{name} is not in nbformat's layout (one-space indent, sorted keys): save it with nbformat")
    return text.replace(old_block, new_block)


def set_readme(text: str, repository: str) -> str:
    """Return README.md's text with its site line (the line starting with SITE_LINE_PREFIX) made for this URL."""
    lines = text.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.startswith(SITE_LINE_PREFIX)]
    if len(at) != 1:
        raise SetUrlError(f"README.md needs exactly one line starting with {SITE_LINE_PREFIX!r}; found {len(at)}")
    ending = lines[at[0]][len(lines[at[0]].rstrip("\r\n")) :]
    lines[at[0]] = site_line(repository) + ending
    return "".join(lines)


# --- the command ---------------------------------------------------------------------------------------------------


def plan(root: Path, url: str | None) -> tuple[str, dict[Path, str]]:
    """Return the repository URL to set and the new text of each file that changes (nothing is written)."""
    pyproject = root / "pyproject.toml"
    readme = root / "README.md"
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    old = {path: path.read_bytes().decode("utf-8") for path in [pyproject, readme, *notebooks]}
    repository = normalise(url if url is not None else read_repository(old[pyproject]))
    new = {pyproject: set_pyproject(old[pyproject], repository), readme: set_readme(old[readme], repository)}
    for path in notebooks:
        new[path] = set_notebook(old[path], repository, path.relative_to(root).as_posix())
    return repository, {path: text for path, text in new.items() if text != old[path]}


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's content atomically (a temporary file beside it, then os.replace), keeping its mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (0 done or nothing to do, 1 --check found changes, 2 bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="https://github.com/OWNER/NAME (default: pyproject's Repository)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository's root (default: this checkout)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not up to date")
    args = parser.parse_args(argv)
    try:
        repository, changes = plan(args.root, args.url)
    except (SetUrlError, OSError, json.JSONDecodeError) as e:
        print(f"set_url: {e}", file=sys.stderr)
        return 2
    names = [path.relative_to(args.root).as_posix() for path in changes]
    if args.check:
        print(f"not up to date with {repository}: {', '.join(names)}" if names else f"up to date: {repository}")
        return 1 if names else 0
    for path, text in changes.items():
        write_atomic(path, text)
    site = "none yet (a placeholder)" if is_placeholder(repository) else site_url(repository)
    print(f"{repository} (site: {site}): " + (f"wrote {', '.join(names)}" if names else "every file already set"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
