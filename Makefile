# Two commands do everything on a fresh machine:
#   make run    install, then start the gateway with examples/polyrelay.yaml
#   make test   install, lint (ruff, import layers), start the databases the suite needs, install Chromium, run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/polyrelay.yaml

.PHONY: install run test lint bench services browser

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
	@bash scripts/haproxy.sh

browser:
	@bash scripts/browser.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

test: install lint services browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py --database sqlite
	$(BIN)/python bench/run.py --database postgresql
