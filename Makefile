# Every target does its own set-up: a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := strangler proxy migrators shadow_compare schema legacy_emulator control

.PHONY: install demo test lint shadow-ci bench bench-tools clean

$(BIN)/strangler: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(BIN)/strangler

install: $(BIN)/strangler

demo: install
	$(BIN)/strangler demo

# Two workers (pytest-xdist): most of the suite's time is waiting on services and syncs, so
# the two cores take both halves at once (every test has its own databases, Redis prefixes
# and ports); the tests that run the whole stack for minutes share one worker
# (tests/conftest.py), so they never take both cores at once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -n $(TEST_WORKERS)

# The replay corpora of shadow_cases/ against the legacy emulator and the new side, each a
# process of its own (PostgreSQL and Redis as for the tests); JUnit report in shadow.xml.
shadow-ci: install
	$(BIN)/strangler shadow-ci --junit shadow.xml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES)

# The proxy bench compares with nginx and loads with wrk (Debian packages); install them
# when missing and apt-get is usable, else the bench says what it skipped.
bench-tools:
	@if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null; \
		else \
			echo "wrk/nginx missing and apt-get not usable: the proxy bench will skip them"; \
		fi; \
	fi

bench: install bench-tools
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
