# Quick start: `make run` (starts the bot on config.yaml; TOCSIN_CONFIG=FILE and PORT=N choose another) and
# `make test` (the whole suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/tocsin --config $${TOCSIN_CONFIG:-config.yaml} run $(if $(PORT),--port $(PORT))

# Two test processes (pytest-xdist): each test has its own database, ports and folders. TEST_WORKERS=0 runs
# the suite in this process (easier to debug).
TEST_WORKERS ?= 2

test: $(TEST_STAMP)
	$(BIN)/python tests/setup_peers.py
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python bench/run_all.py

lint: $(TEST_STAMP)
	$(BIN)/python -m ruff check bot core tests bench || true

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tocsin.db tocsin.db-wal tocsin.db-shm
