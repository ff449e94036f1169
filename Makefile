# The two commands of the README: `make book` and `make test`. Both create or refresh .venv first; a second run
# installs nothing (the stamp is newer than the pins).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cryonet-installed
DATA_DIR ?= data
PROFILE ?= ci
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: venv test test-fast lint book browser data benchmarks clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## make test: lint (ruff rules, format check, import floors) and the whole suite (slow tests included), offline.
test: $(STAMP) lint
	$(PY) -m pytest -m "" -q

## make lint: ruff (the rules configured in pyproject.toml), ruff's format check and the import floors
## (import-linter: the layers contract in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## make test-fast: the default pytest selection (slow tests skipped).
test-fast: $(STAMP)
	$(PY) -m pytest -q

## make data: the synthetic twin scenes of both regions (skipped when already there).
data: $(STAMP)
	$(VENV)/bin/cryonet synth --region poiqu --out $(DATA_DIR)/poiqu
	$(VENV)/bin/cryonet synth --region montblanc --out $(DATA_DIR)/montblanc

## make book: every chapter executed with papermill (toc order; PROFILE, DATA_DIR, RUN_DIR), book/status.md written,
## the site built into _build/html with warnings as errors, then every page opened in headless Chromium (broken
## images or internal links fail; screenshots in _build/html/_screenshots). SITE_CHECK=--static-only skips the browser.
RUN_DIR ?= runs/$(PROFILE)
SITE_CHECK ?=
book: $(STAMP) browser
	$(PY) book/execute.py --profile $(PROFILE) --data-dir $(DATA_DIR) --run-dir $(RUN_DIR) --no-progress
	$(VENV)/bin/jupyter-book build book/ -W --keep-going --all
	$(PY) book/check_site.py _build/html $(SITE_CHECK)

## make browser: Debian chromium + chromedriver for the site check (installed when missing and running as root).
browser:
	@if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } && [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium chromium-driver (apt) for the site check"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "chromium could not be installed: book/check_site.py will say so (SITE_CHECK=--static-only skips it)"; \
	fi

benchmarks: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build book/_build book/chapters book/status.md .pytest_cache
