# The newcomer's commands: `make run` (the system on embedded defaults) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo lint bench lock clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: $(STAMP)  ## embedded NATS + all five services on SQLite under var/; Ctrl-C stops
	$(BIN)/dsi up

demo: $(STAMP)  ## drive the thin flow against a running `make run`
	$(BIN)/dsi demo

test: $(STAMP)  ## every test: unit, and integration on real NATS JetStream + PostgreSQL
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)  ## every benchmark and a summary table (not part of `make test`); BENCH="--quick" for a short run
	$(BIN)/python -m benchmarks $(BENCH)

lock: $(STAMP)  ## refreeze requirements.txt from requirements.in
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip freeze --exclude-editable > requirements.txt

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
