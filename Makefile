# Two commands do everything on a fresh machine:
#   make run    install, then start the gateway with examples/polyrelay.yaml
#   make test   install, start the databases the suite needs, install Chromium for the console tests, run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/polyrelay.yaml

.PHONY: install run test bench services browser

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

browser:
	@bash scripts/browser.sh

test: install services browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py
