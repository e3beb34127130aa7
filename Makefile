# hardneg — every target creates/uses the virtual environment .venv on first use.
# `make run` and `make test` are the two commands README.md gives for a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1

.PHONY: help install run test test-all lint format bench study paper-table clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install hardneg with its dev extras

run: $(STAMP)  ## the main job: SCT on the embedded glyph dataset (a few minutes on CPU)
	$(PY) -m hardneg.run $(ARGS)

test: $(STAMP)  ## the fast test suite (slow tests excluded)
	$(PY) -m pytest $(ARGS)

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -m "" $(ARGS)

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check hardneg tests experiments

format: $(STAMP)  ## ruff format + import sorting
	$(PY) -m ruff check --fix --select I hardneg tests experiments
	$(PY) -m ruff format hardneg tests experiments

bench: $(STAMP)  ## speed and memory against peers and naive baselines (minutes)
	$(PY) experiments/bench/run_all.py $(ARGS)

study: $(STAMP)  ## the study: hn/shn/sct + baselines x 3 seeds on the CPU testbed, table + figures (ARGS="--jobs 3")
	$(PY) -m hardneg.study $(ARGS)

paper-table: $(STAMP)  ## a paper table as one sweep, e.g. ARGS="run cub --launcher submitit_slurm" or ARGS="show multirun/paper/cub"
	$(PY) -m hardneg.study.paper_table $(ARGS)

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
