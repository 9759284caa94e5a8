# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install chromium demo test bench bench-load bench-import bench-value bench-dispatch soak lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium through Playwright; nothing downloads a browser.
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/loyalty demo

test: install chromium
	$(BIN)/python -m pytest -q

# Engine, cards, storage and backtest suites (pytest-benchmark), then the import and till-load scripts.
bench: install
	$(BIN)/python -m pytest benchmarks -q -s --benchmark-enable --benchmark-columns=median,ops,rounds
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/load_till.py
	$(BIN)/python benchmarks/bench_value.py

bench-value: install
	$(BIN)/python benchmarks/bench_value.py

bench-dispatch: install
	$(BIN)/python benchmarks/bench_dispatch.py

bench-load: install
	$(BIN)/python benchmarks/load_till.py

bench-import: install
	$(BIN)/python benchmarks/bench_import.py

# Long runs: the ledger state machine with many more examples, memory under 100,000 forged requests, the
# chaos scenarios long (their table: tests/scenarios), and a 1,000,000-row import (flat memory).
soak: install
	LEDGER_EXAMPLES=500 $(BIN)/python -m pytest -q tests/storage/test_ledger_properties.py
	TRUST_MEMORY_REQUESTS=100000 $(BIN)/python -m pytest -q -p no:logging tests/api/test_trust.py -k memory
	FUZZ_EXAMPLES=3000 $(BIN)/python -m pytest -q -p no:logging tests/api/test_fuzz.py
	$(BIN)/python -m tests.scenarios
	BENCH_IMPORT_ROWS=1000000 BENCH_IMPORT_BASELINE=1000 BENCH_IMPORT_DATABASES=sqlite $(BIN)/python benchmarks/bench_import.py

lint: install
	$(BIN)/ruff check rules loyalty api cli tests benchmarks
	$(BIN)/ruff format --check rules loyalty api cli tests benchmarks

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks *.egg-info
