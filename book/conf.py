"""Sphinx + myst-nb configuration of the tutorial site (`make book`, `make book-quick`; book/layout.md "This site").

The notebooks are discovered, never listed: every `notebooks/*.ipynb`, ordered by file name with appendices last,
titled by its first `# ` heading. They are staged into `book/notebooks/` (git-ignored) from one of two places:

- `NST_BOOK_NOTEBOOKS` unset (`make book`): the committed notebooks, executed here at their defaults through
  myst-nb's jupyter-cache (an unchanged notebook is not run again; a failing cell fails the build);
- `NST_BOOK_NOTEBOOKS=DIR` (`make book-quick`, CI): the copies the notebook tests executed at tiny sizes
  (`tests/nbrun.py` keeps them in `build/executed/`), rendered as they are, with execution off.

Everything a page loads is served by the site itself: MathJax 3 from the `django-static-mathjax` package, the
ipywidgets HTML manager (`@jupyter-widgets/html-manager`, fetched by `make` into `build/vendor/`), the theme's own
fonts and icons. The repository URL comes from one place, `[project.urls] Repository` in pyproject.toml, which
`make set-url URL=...` (tools/set_url.py) writes; the Pages workflow writes the URL of the repository it runs in
before building, so a fork's site links to the fork.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
REPOSITORY = PYPROJECT["project"]["urls"]["Repository"].rstrip("/")
BRANCH = os.environ.get("NST_BOOK_BRANCH", "main")
NOTEBOOKS = ROOT / "notebooks"
STAGE = BOOK / "notebooks"  # git-ignored: what the site renders, rebuilt at every build
GENERATED = BOOK / "_generated"  # git-ignored: pages made from the project's own files
VENDOR = Path(os.environ.get("NST_BOOK_VENDOR") or ROOT / "build" / "vendor")
EXECUTED = os.environ.get("NST_BOOK_NOTEBOOKS")  # a folder of executed notebooks, or None to execute here

project = "nst_utils"
author = ""  # the footer says it once, in the copyright line
copyright = "the nst-utils authors, MIT licence"
release = PYPROJECT["project"]["version"]

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.linkcode",
]
exclude_patterns = ["_build", "_generated", "**/_*.md", "notebooks/outputs", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]
smartquotes_action = "qe"  # curly quotes, but `--flag` keeps its two hyphens (no en dash)
suppress_warnings = ["myst.header"]  # notebooks may step from `#` to `###`; that is theirs to decide

# --- notebooks ---------------------------------------------------------------------------------------------------


def notebook_order(path: Path) -> tuple[bool, str]:
    """Return the sort key of a notebook: numbered steps by file name, appendices after them."""
    return (path.stem.startswith("appendix"), path.name)


def notebook_title(path: Path) -> str:
    """Return a notebook's first `# ` heading (its page title), or its file name if it has none."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _code_sources(nb: dict) -> list[str]:
    """Return the sources of a notebook's code cells, less papermill's injected-parameters cell."""
    return [
        "".join(c["source"]).strip()
        for c in nb["cells"]
        if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]


def stage_notebooks() -> list[Path]:
    """Copy the notebooks the site renders into book/notebooks/ and return the committed ones, in order."""
    sources = sorted(NOTEBOOKS.glob("*.ipynb"), key=notebook_order)
    if not sources:
        raise RuntimeError(f"no notebooks in {NOTEBOOKS}")
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir()
    for src in sources:
        if EXECUTED is None:
            shutil.copyfile(src, STAGE / src.name)
            continue
        done = ROOT / EXECUTED / src.name
        if not done.is_file():
            raise RuntimeError(
                f"{done} is missing: the notebook tests keep each executed notebook there "
                f"(make book-quick runs them), or build with `make book`"
            )
        executed = json.loads(done.read_text(encoding="utf-8"))
        if _code_sources(executed) != _code_sources(json.loads(src.read_text(encoding="utf-8"))):
            raise RuntimeError(
                f"{done} was executed from an older {src.relative_to(ROOT)}: run its test again (make book-quick)"
            )
        for cell in executed["cells"]:  # papermill's cell: say where its values come from
            if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                source = "".join(cell["source"]).removeprefix("# Parameters\n")
                note = "# the test suite's tiny parameters (make book-quick); `make book` keeps the defaults\n"
                cell["source"] = note + source
        (STAGE / src.name).write_text(json.dumps(executed), encoding="utf-8")
    return sources


def github_path(path: str) -> str:
    """Return the repository's GitHub URL of a path inside it."""
    return f"{REPOSITORY}/blob/{BRANCH}/{path}"


def colab_url(name: str) -> str:
    """Return the "Run in Google Colab" URL of notebooks/<name>.ipynb (Colab opens it from GitHub)."""
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{name}.ipynb"


def write_tutorial_pages(sources: list[Path]) -> None:
    """Write the tutorial's index page and the list of notebooks the landing page includes."""
    table = "".join(f"- [{notebook_title(src)}](/notebooks/{src.stem}.ipynb) (`{src.name}`)\n" for src in sources)
    (STAGE / "_table.md").write_text(table, encoding="utf-8")
    toctree = "\n".join(src.stem for src in sources)
    how = (
        "executed at their defaults by `make book`"
        if EXECUTED is None
        else "executed at the tiny sizes of the test suite (`make book-quick`): the figures are small and the "
        "numbers are not the defaults'; `make book` renders them at their defaults"
    )
    (STAGE / "index.md").write_text(
        f"""# The tutorial

Each step is a notebook, rendered here with every output ({how}). Each page links its source on GitHub,
the notebook itself without outputs, and Google Colab, where it runs as it is.

{table}
```{{toctree}}
:hidden:
:maxdepth: 1

{toctree}
```
""",
        encoding="utf-8",
    )


def write_layout_page() -> None:
    """Write the module table of the layout page from the import-linter layers and each module's docstring."""
    contract = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    package = PYPROJECT["tool"]["importlinter"]["root_package"]
    lines = ["| layer | module | what it is |", "|---|---|---|"]
    for depth, layer in enumerate(contract["layers"], 1):
        for module in (m.strip() for m in layer.split("|")):
            path = ROOT / package / f"{module}.py"
            if not path.exists():
                path = ROOT / package / module / "__init__.py"
            doc = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "") if path.exists() else ""
            summary = doc.strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
            lines.append(f"| {depth} | {{py:mod}}`{module} <{package}.{module}>` | {summary} |")
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "layers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


shutil.rmtree(BOOK / "_api", ignore_errors=True)  # autosummary writes it afresh: a renamed module leaves no page
SOURCES = stage_notebooks()
write_tutorial_pages(SOURCES)
write_layout_page()
NOTEBOOK_NAMES = {src.stem for src in SOURCES}

# --- execution ---------------------------------------------------------------------------------------------------

nb_execution_mode = "cache" if EXECUTED is None else "off"
nb_execution_cache_path = str(ROOT / "build" / "jupyter_cache")
nb_execution_timeout = int(os.environ.get("NST_BOOK_CELL_TIMEOUT", "3600"))
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (display(Markdown(table))) with tables and maths, as in Jupyter
nb_output_stderr = "remove"  # TensorFlow's C++ start-up lines on stderr (oneDNN, CUDA probing) are no part of it
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# --- offline assets ----------------------------------------------------------------------------------------------


def stage_static() -> Path:
    """Return a folder holding MathJax and the widgets manager, copied from their packages, for _static/."""
    import mathjax  # django-static-mathjax: MathJax 3's es5 build as package data

    out = ROOT / "build" / "book-static"
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = out / "mathjax"
    if not (target / "tex-chtml.js").exists():
        shutil.copytree(
            es5,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("tex-*-full*.js", "tex-mml-*.js", "mml-*.js", "tex-svg.js"),
        )
    widgets = VENDOR / "html-manager" / "dist"
    if not (widgets / "embed.js").exists():
        raise RuntimeError(
            f"{widgets / 'embed.js'} is missing: `make book-vendor` fetches @jupyter-widgets/"
            "html-manager from npm (the notebooks' slider panels are rendered with it)"
        )
    shutil.copytree(widgets, out / "widgets", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.map", "*-amd.js"))
    return out


html_static_path = ["_static", str(stage_static())]
mathjax_path = "mathjax/tex-chtml.js"  # relative: served from _static/, no CDN
# the HTML manager for built-in widgets only (embed.js, no require.js); any other widget module would come from a
# CDN, so none is allowed: an unknown module shows as an error in the console, which the site test catches
nb_ipywidgets_js = {
    "widgets/embed.js": {"data-jupyter-widgets-cdn": "/nonexistent-cdn/", "data-jupyter-widgets-cdn-only": ""}
}
html_css_files = ["nst.css"]
html_js_files = [("mathjax2-shim.js", {"priority": 100})]  # before MathJax and the widgets: see the file

# --- theme -------------------------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "nst_utils: neural style transfer, step by step"
html_logo = None
html_favicon = None
html_last_updated_fmt = "%Y-%m-%d"
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "use_repository_button": True,
    "use_source_button": False,  # the notebook pages carry their own "View source" header
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}  # an empty mode makes the theme's script log a console error
html_show_sourcelink = False
html_copy_source = False

# --- API ---------------------------------------------------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autosummary_mock_imports = ["nst_utils.__main__"]  # importing it runs the command; mocked, autosummary skips it
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
default_role = "code"  # the docstrings' `name` is code, as on GitHub
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- the notebook header (TensorFlow docs style) and links out of notebooks/ -------------------------------------

HEADER = """<div class="nst-nb-header">
<a class="nst-btn" href="{source}"><span aria-hidden="true">&lt;/&gt;</span> View source on GitHub</a>
<a class="nst-btn" href="{download}" download><span aria-hidden="true">&#x2913;</span> Download notebook</a>
<a class="nst-btn" href="{colab}"><span aria-hidden="true">&#x25B6;</span> Run in Google Colab</a>
</div>
"""


WIDGETS_NOTE = """<p class="nst-widgets-note">The controls on this page show the state the notebook left them in; moving
them needs the notebook running (Colab, or <code>make lab</code>).</p>
"""


def notebook_header(app, doctree, docname: str) -> None:
    """Put the View source / Download notebook / Run in Google Colab links under a notebook page's title."""
    from docutils import nodes

    folder, _, name = docname.partition("/")
    if folder != "notebooks" or name not in NOTEBOOK_NAMES:
        return
    html = HEADER.format(
        source=github_path(f"notebooks/{name}.ipynb"), download=f"../_notebooks/{name}.ipynb", colab=colab_url(name)
    )
    if any("application/vnd.jupyter.widget-view+json" in node.astext() for node in doctree.findall(nodes.raw)):
        html += WIDGETS_NOTE
    section = next(iter(doctree.findall(nodes.section)), None)
    raw = nodes.raw("", html, format="html")
    if section is not None and section.children and isinstance(section[0], nodes.title):
        section.insert(1, raw)
    else:
        doctree.insert(0, raw)


def links_out_of_notebooks(app, doctree) -> None:
    """Point a notebook's relative links to files outside notebooks/ (../README.md) at the file on GitHub."""
    from docutils import nodes
    from sphinx import addnodes

    if not app.env.docname.startswith("notebooks/"):
        return
    for xref in list(doctree.findall(addnodes.pending_xref)):
        target = xref.get("reftarget", "")
        if xref.get("reftype") == "myst" and target.startswith("../"):
            link = nodes.reference("", "", *xref.children, refuri=github_path(target[3:]), internal=False)
            xref.replace_self(link)


def linkcode_resolve(domain: str, info: dict) -> str | None:
    """Return the GitHub URL of an API object's source lines (the "[source]" link beside it)."""
    import importlib
    import inspect

    if domain != "py" or not info.get("module"):
        return None
    try:
        obj = importlib.import_module(info["module"])
        for part in info["fullname"].split("."):
            obj = getattr(obj, part)
        obj = inspect.unwrap(obj)
        path = Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT)
        lines, start = inspect.getsourcelines(obj)
    except (AttributeError, ImportError, OSError, TypeError, ValueError):
        return None
    return f"{github_path(path.as_posix())}#L{start}-L{start + len(lines) - 1}"


def plain_problematic(app, doctree, docname: str) -> None:
    """Show text that docutils could not parse as it is (the build warns), not as a link to a dropped message."""
    from docutils import nodes

    for node in doctree.findall(nodes.problematic):
        node.attributes.pop("refid", None)


def escape_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """Read docstrings as the plain text they are: `|x|` is an absolute value, not an rST substitution."""
    lines[:] = [line.replace("|", "\\|") for line in lines]


def copy_source_notebooks(app, exception) -> None:
    """Serve the committed notebooks (no outputs, as on GitHub) for the "Download notebook" links."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir) / "_notebooks"
        out.mkdir(exist_ok=True)
        for src in SOURCES:
            shutil.copyfile(src, out / src.name)


def repository_url(app, docname: str, source: list[str]) -> None:
    """Write the repository URL (pyproject's [project.urls] Repository) where a page says @REPOSITORY@."""
    if not docname.startswith("notebooks/"):
        source[0] = source[0].replace("@REPOSITORY@", REPOSITORY)


def setup(app):
    app.connect("source-read", repository_url)
    app.connect("doctree-read", links_out_of_notebooks)
    app.connect("autodoc-process-docstring", escape_docstring)
    app.connect("doctree-resolved", notebook_header)
    app.connect("doctree-resolved", plain_problematic)
    app.connect("build-finished", copy_source_notebooks)
    return {"parallel_read_safe": True}
