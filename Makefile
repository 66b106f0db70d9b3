# Idempotent set-up: `make demo` and `make test` create .venv and install the project on first use.
# On the project's CPU machines the constraints file keeps pip on the local torch 2.13.0 CPU wheel
# (a loose torch requirement would pull a multi-GB CUDA build). With your own CUDA torch installed,
# run `make CONSTRAINTS= test`, or `pip install -e '.[dev]'` in your environment: your torch is kept.
VENV ?= .venv
PYTHON ?= python3
CONSTRAINTS ?= constraints-cpu.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minmo-installed

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint golden bench

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/minmo demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

golden: $(STAMP)
	$(VENV)/bin/minmo check-golden tests/fixtures/golden
