# Quick start: `make train` runs the main job, `make test` passes the tests. Both first build
# .venv (once; later calls only re-check it), so each works on its own on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A known-good PyTorch pair, installed only when the venv has no torch yet.
# Bring your own build instead: make TORCH="torch torchvision --index-url <your wheel index>"
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= test,launchers,optuna,bench
# Datasets: $FASTLIGHT_DATA if set, else a shared copy beside the checkout, else ./data (downloaded).
FASTLIGHT_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),data)
export FASTLIGHT_DATA
STAMP := $(VENV)/.installed

.PHONY: install train test test-all bench
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $@

train: $(STAMP)   ## the main job: collaborative filtering on MovieLens 100K
	$(BIN)/python train.py task=collab $(ARGS)

test: $(STAMP)    ## the default test suite (fast; slow tests excluded)
	$(BIN)/python -m pytest -q $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "" $(ARGS)
