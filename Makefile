# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install chromium pgbouncer demo test bench bench-load bench-hosts bench-history bench-import bench-value \
	bench-dispatch soak lint typecheck clean

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

# The API suite and `make bench-hosts` run behind Debian's PgBouncer (deploy/pgbouncer/start.sh starts
# one). Without it, and outside CI, the tests run directly against PostgreSQL.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || { \
		echo "installing Debian's pgbouncer for the pooler tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq pgbouncer >/dev/null; } || \
		{ [ "$$CI" != true ] && echo "pgbouncer: not installed; the API suite runs without it"; }

demo: install
	$(BIN)/loyalty demo

# The API suite's PostgreSQL cases go through PgBouncer (transaction pooling) when one starts; under
# CI=true it must.
test: install chromium pgbouncer
	@pooler=$$(deploy/pgbouncer/start.sh) || { [ "$$CI" != true ] || exit 1; pooler=; }; \
	echo "API suite through PgBouncer: $${pooler:-no (not started)}"; \
	LOYALTY_TEST_PGBOUNCER=$$pooler $(BIN)/python -m pytest -q

# Engine, cards, storage and backtest suites (pytest-benchmark), then the import and till-load scripts.
bench: install pgbouncer
	$(BIN)/python -m pytest benchmarks -q -s --benchmark-enable --benchmark-columns=median,ops,rounds
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/load_till.py
	$(BIN)/python benchmarks/load_till.py --scenarios hosts
	$(BIN)/python benchmarks/bench_value.py

bench-value: install
	$(BIN)/python benchmarks/bench_value.py

bench-dispatch: install
	$(BIN)/python benchmarks/bench_dispatch.py

bench-load: install
	$(BIN)/python benchmarks/load_till.py

# One server with 2 workers against two servers with 1 worker each, behind one PgBouncer and Redis.
bench-hosts: install pgbouncer
	$(BIN)/python benchmarks/load_till.py --scenarios hosts

bench-import: install
	$(BIN)/python benchmarks/bench_import.py

# Monthly report and expiry job over 10,000,000 ledger entries in month partitions (BENCH_HISTORY_ROWS).
bench-history: install
	$(BIN)/python benchmarks/bench_history.py

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
