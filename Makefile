# The newcomer's commands: `make run` (the system on embedded defaults) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo lint bench soak lock clean browser screenshots

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

test: $(STAMP) browser  ## every test: unit, integration on real NATS JetStream + PostgreSQL, the console in Chromium
	$(BIN)/pytest

# The console's browser tests drive Debian's Chromium (Playwright with executable_path; never a downloaded build).
# Missing, it is installed here when we are root on Debian; otherwise those tests fail saying how to install it.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the console's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "warning: $(CHROMIUM) is missing and cannot be installed here (not root, or no apt-get):" \
	  "the console's browser tests will fail; install Debian's chromium package"; fi; }

screenshots: $(STAMP) browser  ## PNGs of the console's main pages under var/screenshots/ (runs its browser tests)
	DSI_SCREENSHOT_DIR=var/screenshots $(BIN)/pytest -q -p no:cacheprovider tests/test_console.py tests/test_console_pages.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)  ## every benchmark and a summary table (not part of `make test`); BENCH="--quick" for a short run
	$(BIN)/python -m benchmarks $(BENCH)

# The seeded fault soak (issue 16 §1): RUNS runs from seed SEED, each compared with its clean twin; exits non-zero
# naming the seed and fault schedule of any run that lost, doubled or changed anything. `make soak SEED=<s> RUNS=1`
# replays one run.
RUNS ?= 25
SEED ?= 1
soak: $(STAMP)  ## the seeded fault soak: make soak RUNS=1000 SEED=1
	$(BIN)/python -m soak --runs $(RUNS) --seed $(SEED)

lock: $(STAMP)  ## refreeze requirements.txt from requirements.in
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip freeze --exclude-editable > requirements.txt

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
