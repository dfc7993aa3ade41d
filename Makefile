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

.PHONY: wheel-test
wheel-test:  ## build a wheel and an sdist, install each into a fresh venv outside the tree, run nst there
	PYTHON=$(PYTHON) .ci/wheel-test

clean:
	rm -rf $(VENV) outputs .pytest_cache
