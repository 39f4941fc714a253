# Two-command quickstart: `make search` (a real search on the embedded dataset) and `make test`.
# Both create the project-local virtualenv .venv and install the package on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: search test test-slow lint

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

search: $(STAMP)
	$(PY) tools/search.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

test-slow: $(STAMP)
	$(PY) -m pytest -m slow tests

# Format check and lint (configured in pyproject.toml); `ruff format .` and `ruff check --fix .` fix most.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
