# FieldWard developer commands. `make demo` and `make test` work on a fresh machine with python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the main job on the embedded defaults: generate the sample plant capture and analyse it.
demo: $(STAMP)
	$(BIN)/fieldward demo --out demo-out

## The whole test suite: lint, strict typing, then every test.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

## Speed against peers on generated captures: sensor core (nfstream, dpkt, tshark), full dissection (tshark);
## inventory accuracy against the generator's ground truth and its cost at 50,000 devices;
## detection rate per attack scenario, false alerts per clean hour, speed with all engines on vs. off.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_sensor_core.py
	$(BIN)/python benchmarks/bench_dissection.py
	$(BIN)/python benchmarks/bench_inventory.py --scale 50000 --polls 300
	$(BIN)/python benchmarks/bench_detection.py
	$(BIN)/python benchmarks/bench_feeds.py

clean:
	rm -rf $(VENV) demo-out .mypy_cache .ruff_cache .pytest_cache
