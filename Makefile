# The two commands of the README: `make run` and `make test`. Each does its own set-up:
# `make run` installs what running needs (requirements.txt), `make test` adds the test
# tools (requirements-dev.txt). Each has its own stamp, redone when its list changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements.txt requirements-dev.txt $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: install install-dev run test lint bench
install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

# Development mode on purpose: settings default to production (DEBUG off).
run: install
	DJANGO_DEBUG=true $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=true $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install-dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	DJANGO_DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .
