# Two commands on a fresh machine:
#   make serve   creates .venv, installs torch (the CUDA build with an NVIDIA GPU, else the CPU build) and wanserve,
#                then serves on the embedded defaults (tiny random-weight models, SQLite in ./data, 127.0.0.1:8000)
#   make test    installs the test extras and runs the tests
# ARGS passes options on: `make serve ARGS="--port 8088"`, `make test ARGS="-x tests/api"`.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin

.PHONY: install install-test serve test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	TORCH_VERSION=$(TORCH_VERSION) sh scripts/install-torch.sh $(BIN)/python
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/wanserve serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(ARGS)
