"""The README works where it is read, on the repository's page and in a clone: every relative link and image points
at a file in the repository (and at a heading of it, for `file.md#anchor`), every notebook is linked, and the site's
address appears only in the one site line that tools/set_url.py writes from pyproject's URL (none while that URL is
the placeholder)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_spec = importlib.util.spec_from_file_location("set_url", ROOT / "tools" / "set_url.py")
set_url = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(set_url)

# [text](target) and ![alt](target), an optional "title" after the target; <https://...> autolinks
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> str:
    """Return Markdown text without its fenced code blocks and inline code spans (no links live there)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def links(text: str) -> list[str]:
    """Return the targets of a Markdown text's inline links, images and autolinks, in order."""
    prose = _prose(text)
    return INLINE_LINK.findall(prose) + AUTOLINK.findall(prose)


def github_slug(heading: str) -> str:
    """Return the anchor GitHub (and MyST's heading anchors) give a heading: lower case, punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Return the anchors of a Markdown file's headings (outside code blocks), with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in _raw_prose_lines(markdown):
        match = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return out


def _raw_prose_lines(text: str) -> list[str]:
    """Return a Markdown text's lines outside fenced code blocks, code spans kept (headings may hold them)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def test_github_slug():
    assert github_slug("Where the weights and images come from") == "where-the-weights-and-images-come-from"
    assert github_slug("Gatys et al.'s normalised VGG19") == "gatys-et-als-normalised-vgg19"
    assert github_slug("The `nst` command") == "the-nst-command"
    assert github_slug("Fixed costs, second round (2026-12-02, quiet: load ~1)") == (
        "fixed-costs-second-round-2026-12-02-quiet-load-1"
    )
    assert github_slug("nst_utils: step by step") == "nst_utils-step-by-step"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


README_TEXT = README.read_text(encoding="utf-8")
RELATIVE = sorted({t for t in links(README_TEXT) if not re.match(r"[a-z][a-z0-9+.-]*:", t)})


@pytest.mark.parametrize("target", RELATIVE)
def test_relative_link_resolves(target):
    path, _, fragment = target.partition("#")
    file = (README.parent / unquote(path)).resolve() if path else README
    assert file.is_relative_to(ROOT) and file.exists(), f"README links {target}: no such file in the repository"
    if fragment:
        assert file.suffix == ".md", f"README links {target}: anchors are checked only in Markdown files"
        assert fragment in anchors(file.read_text(encoding="utf-8")), f"README links {target}: no such heading"


def test_readme_links_every_notebook_and_stays_short():
    linked = {t for t in RELATIVE if re.fullmatch(r"notebooks/[^/#]+\.ipynb", t)}
    names = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert linked == names, f"README links {sorted(linked)}; notebooks/ has {sorted(names)}"
    assert len(README_TEXT.splitlines()) <= 150


def test_site_address_only_in_the_site_line():
    repository = set_url.read_repository((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    line = set_url.site_line(repository)
    assert README_TEXT.splitlines().count(line) == 1, "README's site line is not pyproject's: run `make set-url`"
    absolute = [t for t in links(README_TEXT) if re.match(r"https?://", t)]
    assert not [t for t in absolute if "OWNER" in t], "README links to the placeholder URL"
    site = [t for t in absolute if ".github.io" in t]
    if set_url.is_placeholder(repository):
        assert site == [], "README links a site while the repository URL is a placeholder"
    else:
        assert site == [set_url.site_url(repository)], "the site's address appears once, in the site line"
    assert not [t for t in absolute if t.startswith(repository + "/blob/")], "use a relative link to a file"
