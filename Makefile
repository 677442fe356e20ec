# Everything starts from nothing: the first target that needs Python creates .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## demo: a coordinator and two local workers train together on the built-in faces
demo: $(BIN)/.installed
	$(BIN)/gan-coordinator demo

## test: the whole test suite (real PostgreSQL, real uvicorn, real torch, Chromium)
test: $(BIN)/.installed
	scripts/install-test-tools.sh
	$(BIN)/python -m pytest

## lint: ruff and mypy over the packages
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: the training step's speed and the sizes on the wire
bench: $(BIN)/.installed
	$(BIN)/python bench/step_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
