PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SEED ?= 7
OUT ?= out/demo

.PHONY: demo test bench clean

$(VENV): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)

demo: $(VENV)
	$(BIN)/satqkd run --preset micius-2016-12-19 --seed $(SEED) --out $(OUT)
	@echo
	@echo "report:  $(OUT)/report.html and $(OUT)/summary.json   (time series: $(OUT)/timeseries.csv, raw records: $(OUT)/raw.npz)"
	@echo "figures: $(OUT)/fig3_pass.png $(OUT)/fig4_link_efficiency.png $(OUT)/fig2c_polarization.png $(OUT)/key_budget.png"
	@echo "keys:    $(OUT)/keys/alice.key $(OUT)/keys/bob.key (identical)"

test: $(VENV)
	$(BIN)/python -m pytest -n 2 tests

bench: $(VENV)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf out .pytest_cache build *.egg-info
