PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SEED ?= 7
OUT ?= out/demo

.PHONY: demo test bench clean

# Two install stamps: `make demo` installs the package alone (what the demo needs), `make test` (and
# `make .venv`) the [dev] extras as well; each notices when pyproject.toml changed or the other
# installed less. Both compile the numba kernels once (python -m satqkd.warmup, ~1-2 min on 2 cores),
# so that the first run starts from a warm cache.
BASE_STAMP := $(VENV)/.satqkd-base
DEV_STAMP := $(VENV)/.satqkd-dev
WARMUP = $(BIN)/python -m satqkd.warmup || echo "warm-up failed: the kernels compile on first use"

$(VENV): $(DEV_STAMP)
	touch $(VENV)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(WARMUP)
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(WARMUP)
	touch $@ $(BASE_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/satqkd run --preset micius-2016-12-19 --seed $(SEED) --out $(OUT)
	@echo
	@echo "report:  $(OUT)/report.html and $(OUT)/summary.json   (time series: $(OUT)/timeseries.csv, raw records: $(OUT)/raw.npz)"
	@echo "figures: $(OUT)/fig3_pass.png $(OUT)/fig4_link_efficiency.png $(OUT)/fig2c_polarization.png $(OUT)/key_budget.png"
	@echo "keys:    $(OUT)/keys/alice.key $(OUT)/keys/bob.key (identical)"

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf out .pytest_cache build *.egg-info
