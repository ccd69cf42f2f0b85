# sdlab: two commands set everything up on a fresh machine.
#
#   make test   virtualenv + project + backing services, then the whole test suite
#   make lab    the same set-up, then every experiment -> reports/latest/report.md
#
# Backing services: missing Debian server packages are installed (as root), and any
# service that does not answer on its usual port gets a private instance under .sdlab/
# (see `sdlab infra --help`). `make down` stops those private instances.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH, unless PYTHON is given.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: help test lab services down lint test-fast clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

test: services  ## set up, type-check src/, then run every test (slow ones included)
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lab: services  ## set up, then run every experiment and write reports/latest/
	$(BIN)/sdlab lab run $(LAB_ARGS)

services: $(INSTALLED)  ## install missing server packages (root), start what is not running
	$(BIN)/sdlab infra up --install

down: $(INSTALLED)  ## stop the private instances sdlab started, remove their data
	$(BIN)/sdlab infra down

test-fast: services  ## the tests not marked slow
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: $(INSTALLED)  ## ruff check, format check, and mypy on src/
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

$(INSTALLED): pyproject.toml
	@test -n "$(PYTHON)" || { echo "sdlab needs Python >= 3.11; none found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:  ## remove the virtualenv, caches and reports (private instances: make down first)
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
