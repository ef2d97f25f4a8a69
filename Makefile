# The two commands of the README:
#   make run   – create .venv, install, start the server on the built-in models (no download)
#   make test  – install the test extras too and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test lint bench install install-dev clean

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-serve.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(PY) -m app serve

test: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint Dockerfile Dockerfile.cpu
	$(PY) -m pytest

bench: $(VENV)/.installed-dev
	$(PY) -m bench faceswap
	$(PY) -m bench enhance
	$(PY) -m bench media
	$(PY) -m bench video

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
