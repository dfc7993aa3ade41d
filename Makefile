# Two commands on a fresh machine with Python 3.10-3.13: `make stylize` and `make test`.
# Each creates the virtual environment .venv on first use and installs this package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: stylize test lab bench fetch info clean figures

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 13) else "Python 3.10-3.13 is needed, found %d.%d" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

stylize: $(STAMP)  ## stylize the default images at 512 px -> outputs/result.png
	$(BIN)/nst stylize -o outputs/result.png --log outputs/result.json

test: $(STAMP)  ## run the whole test suite (notebooks included)
	$(BIN)/python -m pytest

figures: $(STAMP)  ## regenerate the README's layer figures (notebook 07's pair and Fig. 3 grid) at 384 px -> docs/figures
	$(BIN)/python -m nst_utils.figures --size 384 --only pair
	$(BIN)/python -m nst_utils.figures --size 384 --steps 50 --only grid

lab: $(STAMP)  ## open the tutorial notebooks in JupyterLab
	$(BIN)/jupyter lab notebooks/

fetch: $(STAMP)  ## download images and weights for offline use
	$(BIN)/nst fetch --all

info: $(STAMP)
	$(BIN)/nst info

.PHONY: set-url
set-url:  ## write the repository's public URL everywhere it is used: make set-url URL=https://github.com/OWNER/NAME (no URL: pyproject's again)
	$(PYTHON) tools/set_url.py $(URL)

.PHONY: wheel-test
wheel-test:  ## build a wheel and an sdist, install each into a fresh venv outside the tree, run nst there
	PYTHON=$(PYTHON) .ci/wheel-test

clean:
	rm -rf $(VENV) outputs .pytest_cache build book/notebooks book/_generated book/_api

# --- the tutorial site (book/: Sphinx + myst-nb; the site's "How the code is laid out" page says more) ------------
DOCS_STAMP := $(VENV)/.docs-stamp
BOOK_OUT := build/book
EXECUTED ?= build/executed
HTML_MANAGER := @jupyter-widgets/html-manager@1.0.15
SPHINX = $(BIN)/sphinx-build -b html -q -d $(BOOK_OUT)/doctrees book $(BOOK_OUT)/html
NOTEBOOK_TESTS = tests/test_notebooks_intro.py tests/test_notebooks_transfer.py tests/test_notebooks_video.py

.PHONY: book book-quick book-site book-serve book-vendor book-clean

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

book-vendor: build/vendor/html-manager/dist/embed.js
build/vendor/html-manager/dist/embed.js:  ## the ipywidgets HTML manager (served by the site, never from a CDN)
	rm -rf build/vendor/html-manager && mkdir -p build/vendor/html-manager
	cd build/vendor && npm pack --silent $(HTML_MANAGER) > pack.txt && tar -xzf "$$(tail -n1 pack.txt)" -C html-manager --strip-components=1 && rm -f "$$(tail -n1 pack.txt)" pack.txt

book: $(DOCS_STAMP) book-vendor  ## execute every notebook at its defaults (cached; a failing cell fails) and build the site -> build/book/html
	env -u NST_BOOK_NOTEBOOKS MPLBACKEND=module://matplotlib_inline.backend_inline $(SPHINX)
	@echo "site: $(BOOK_OUT)/html/index.html"

book-quick: $(DOCS_STAMP) book-vendor  ## run the notebook tests at tiny sizes (they keep what they execute), build the site from those
	NST_EXECUTED_DIR=$(EXECUTED) $(BIN)/python -m pytest -q $(NOTEBOOK_TESTS)
	$(MAKE) book-site

book-site: $(DOCS_STAMP) book-vendor  ## build the site from the notebooks already executed in build/executed (no execution)
	NST_BOOK_NOTEBOOKS=$(EXECUTED) $(SPHINX)
	@echo "site: $(BOOK_OUT)/html/index.html"

book-clean:  ## forget the built site, the executed notebooks and the execution cache (make book then runs every notebook)
	rm -rf $(BOOK_OUT) build/book-static build/jupyter_cache $(EXECUTED) book/notebooks book/_generated book/_api

book-serve:  ## serve the built site on http://127.0.0.1:8000/
	$(PYTHON) -m http.server 8000 --bind 127.0.0.1 --directory $(BOOK_OUT)/html
