# Two commands do everything on a fresh machine:
#   make run    install, then start the gateway with examples/polyrelay.yaml
#   make test   install, start the databases the suite needs, run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/polyrelay.yaml

.PHONY: install run test bench services

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/polyrelay serve --config $(CONFIG)

services:
	@bash scripts/services.sh

test: install services
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py
