# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/loyalty demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pytest benchmarks -q --benchmark-enable --benchmark-columns=median,ops,rounds -p no:randomly

lint: install
	$(BIN)/ruff check rules loyalty tests benchmarks
	$(BIN)/ruff format --check rules loyalty tests benchmarks

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks *.egg-info
