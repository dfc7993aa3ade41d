"""The built tutorial site in a real browser: every page from a local server, offline, complete.

Opens every page of `build/book/html` (`make book-site`, `make book-quick` or `make book`; `NST_SITE_DIR` moves
it) in Debian's Chromium through Playwright, served by an HTTP server on 127.0.0.1 that the test starts. Each page
and everything it loads answers 200, the console shows no error, every <img> has decoded, no raw TeX is left in
the visible text (MathJax typeset it), every internal link resolves (its page, and its #fragment on that page),
and no request goes to any host but the local server (all are recorded; any other is refused and reported). Raw
Markdown table rules (`|---|`) in the text mean a notebook's Markdown output was not rendered.
Outside CI the test skips when no site has been built; in CI (CI=true) a missing site fails it.
`NST_SITE_SHOTS=DIR` keeps a screenshot of every page at laptop width (1366 px).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest
from conftest import CHROMIUM
from conftest import CHROMIUM_FLAGS as FLAGS

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("NST_SITE_DIR") or ROOT / "build" / "book" / "html")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    """Fail in CI, skip elsewhere, with the reason."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the site test must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site() -> Path:
    """Return the built site's folder (skip outside CI when there is none; fail in CI)."""
    if not (SITE / "index.html").is_file():
        _missing(f"no built site at {SITE}: `make book-quick` (or `make book-site` after the notebook tests) builds it")
    return SITE


@pytest.fixture(scope="module")
def sync_api(site):
    """Return Playwright's sync API, with Debian's Chromium there to drive."""
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[browser]')")
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does this)")
    return sync_api


def repository() -> str:
    """Return the repository URL, set in one place: pyproject's [project.urls] Repository."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)["project"]["urls"]["Repository"].rstrip("/")
    return re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1).rstrip("/")  # Python 3.10


# Visible text outside code, scripts and typeset maths: raw TeX here means MathJax did not typeset it.
VISIBLE_TEXT = """() => {
  const skip = 'pre, code, script, style, textarea, noscript, mjx-container, .MathJax';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip)) continue;
    if (!el.getClientRects().length) continue;  // not rendered (display: none, collapsed)
    parts.push(n.textContent);
  }
  return parts.join(' ');
}"""

# Every <img> loaded now (lazy ones too) and decoded: the broken ones' addresses.
BROKEN_IMAGES = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src);
}"""

TYPESET = """async () => {
  if (!window.MathJax) return document.querySelectorAll('.math').length === 0 ? 'no maths' : 'no MathJax';
  await MathJax.startup.promise;
  return 'typeset';
}"""


@pytest.fixture(scope="module")
def server(site):
    """Yield the base URL of an HTTP server on 127.0.0.1 serving the built site."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_every_page_renders_offline(server, sync_api):
    shots = Path(os.environ["NST_SITE_SHOTS"]) if os.environ.get("NST_SITE_SHOTS") else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    foreign: list[str] = []
    requested: list[str] = []
    ids: dict[str, set[str]] = {}  # page URL -> the ids on it
    links: dict[str, set[str]] = {}  # link URL (with fragment) -> the pages that have it
    statuses: dict[str, int] = {}
    current = {"page": ""}

    def route(route):
        url = route.request.url
        requested.append(url)
        if url.startswith((server, "data:", "blob:")):
            route.continue_()  # routing every request also turns Chromium's cache off: each asset is fetched
        else:
            foreign.append(f"{current['page']} -> {url}")
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on(
                "console",
                lambda m: m.type == "error" and problems.append(f"{current['page']}: console error: {m.text}"),
            )
            page.on("pageerror", lambda e: problems.append(f"{current['page']}: script error: {e}"))
            page.on("response", lambda r: statuses.__setitem__(r.url, r.status))
            page.on(
                "requestfailed",
                lambda r: (
                    r.url.startswith(server)
                    and problems.append(f"{current['page']}: request failed: {r.url} ({r.failure})")
                ),
            )

            queue, seen = [server + "index.html"], {server + "index.html"}
            while queue:
                url = queue.pop(0)
                current["page"] = url.removeprefix(server)
                response = page.goto(url, wait_until="load")
                if response is None or response.status != 200:
                    problems.append(f"{current['page']}: answered {response and response.status}")
                    continue
                page.wait_for_load_state("networkidle")
                if page.evaluate(TYPESET) == "no MathJax":
                    problems.append(f"{current['page']}: has maths but MathJax did not load")
                for src in page.evaluate(BROKEN_IMAGES):
                    problems.append(f"{current['page']}: image did not decode: {src}")
                text = " ".join(page.evaluate(VISIBLE_TEXT).split())
                for raw in ("$$", "\\begin{", "\\(", "\\[", "|---|"):  # TeX MathJax left, a Markdown table unparsed
                    if raw in text:
                        at = text.index(raw)
                        excerpt = text[max(0, at - 60) : at + 60]
                        problems.append(f"{current['page']}: raw {raw!r} in the text: ...{excerpt}...")
                ids[url] = set(page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
                ids[url] |= set(page.evaluate("Array.from(document.querySelectorAll('a[name]')).map(e => e.name)"))
                if shots:
                    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", current["page"]) or "index"
                    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                for href in page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                    if not href.startswith(server):
                        continue
                    links.setdefault(href, set()).add(current["page"])
                    target = urldefrag(href).url
                    if target.endswith("/"):
                        target += "index.html"
                    if target.endswith(".html") and target not in seen:
                        seen.add(target)
                        queue.append(target)
        finally:
            browser.close()

    # every internal link: its file answers 200 and its #fragment is an id on that page
    for href, on in sorted(links.items()):
        target, fragment = urldefrag(href)
        if target.endswith("/"):
            target += "index.html"
        where = ", ".join(sorted(on)[:3])
        if target in ids:
            if fragment and fragment not in ids[target]:
                problems.append(f"{where}: link to a missing anchor: {href.removeprefix(server)}")
        else:
            path = SITE / urlsplit(target).path.lstrip("/")
            if not path.is_file():
                problems.append(f"{where}: broken link: {href.removeprefix(server)}")
    for url, status in sorted(statuses.items()):
        if url.startswith(server) and status != 200:
            problems.append(f"answered {status}: {url.removeprefix(server)}")

    pages = len(ids)
    notebooks = [u for u in ids if "/notebooks/" in u and not u.endswith("/index.html")]
    assert pages >= 10, f"only {pages} pages reached from index.html"
    assert notebooks, "no notebook page reached from index.html"
    problems += [f"request to another host: {f}" for f in foreign]
    assert not problems, f"{len(problems)} problems on {pages} pages:\n" + "\n".join(problems[:60])
    assert requested, "the browser made no request"


def test_notebook_pages_carry_the_header(site):
    """Each notebook page links its source on GitHub, its download and Colab, all from the one repository URL."""
    repo = repository()
    owner_repo = repo.removeprefix("https://github.com/")
    names = [p.stem for p in (ROOT / "notebooks").glob("*.ipynb")]
    assert names
    missing = [n for n in names if not (site / "notebooks" / f"{n}.html").is_file()]
    assert not missing, f"the site at {site} has no page for {missing}: it is older than notebooks/ (make book-site)"
    for name in names:
        html = (site / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        header = html[html.index('class="nst-nb-header"') :]
        header = header[: header.index("</div>")]
        assert f'href="{repo}/blob/main/notebooks/{name}.ipynb"' in header, name
        assert f'href="../_notebooks/{name}.ipynb" download' in header, name
        assert (
            f'href="https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}.ipynb"' in header
        ), name
        served = (site / "_notebooks" / f"{name}.ipynb").read_bytes()
        assert served == (ROOT / "notebooks" / f"{name}.ipynb").read_bytes(), f"{name}: not the committed notebook"
        for label in ("View source", "Download notebook", "Run in Google Colab"):
            assert label in header, (name, label)


def test_tutorial_pages_follow_the_notebooks(site):
    """The tutorial lists every notebook, by file name with appendices last, each titled by its first heading."""
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"), key=lambda p: (p.stem.startswith("appendix"), p.name))
    html = (site / "notebooks" / "index.html").read_text(encoding="utf-8")
    body = html[html.index("<article") :]
    at = [body.index(f'href="{p.stem}.html"') for p in sources]
    assert at == sorted(at), [p.stem for p in sources]
    for path in sources:
        nb = json.loads(path.read_text(encoding="utf-8"))
        heading = next(
            line[2:].strip()
            for c in nb["cells"]
            if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines()
            if line.startswith("# ")
        )
        page = (site / "notebooks" / f"{path.stem}.html").read_text(encoding="utf-8")
        title = re.search(r"<title>(.*?)</title>", page, re.DOTALL).group(1)
        words = re.sub(r"[^\w]+", " ", heading).split()
        assert all(w in title for w in words[:4]), (heading, title)
