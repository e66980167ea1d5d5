# Two commands do everything on a fresh machine:
#   make run    install, then start the gateway with examples/polyrelay.yaml
#   make test   install, lint (ruff, import layers), start the databases the suite needs, install Chromium and
#               the test OpenID Connect provider (npm ci), run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/polyrelay.yaml

.PHONY: install run test lint bench services browser oidc

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

oidc:
	@bash scripts/oidc.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

test: install lint services browser oidc
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/run.py --database sqlite
	$(BIN)/python bench/run.py --database postgresql
