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

.PHONY: venv test test-fast book data benchmarks clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## make test: the whole suite (slow tests included), offline.
test: $(STAMP)
	$(PY) -m pytest -m "" -q

## make test-fast: the default pytest selection (slow tests skipped).
test-fast: $(STAMP)
	$(PY) -m pytest -q

## make data: the synthetic twin scenes of both regions (skipped when already there).
data: $(STAMP)
	$(VENV)/bin/cryonet synth --region poiqu --out $(DATA_DIR)/poiqu
	$(VENV)/bin/cryonet synth --region montblanc --out $(DATA_DIR)/montblanc

## make book: data, then every chapter executed and the site built.
book: data
	@echo "The chapters are not written yet (issue 5): generated the default scenes under $(DATA_DIR)/ only."

benchmarks: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build book/_build .pytest_cache
