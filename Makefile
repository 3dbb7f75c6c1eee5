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
	$(BIN)/satqkd simulate --preset micius-2016-12-19 --seed $(SEED) --out $(OUT)
	@echo "report: $(OUT)/summary.json  figures: $(OUT)/*.png"

test: $(VENV)
	$(BIN)/python -m pytest -n 2 tests

bench: $(VENV)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf out .pytest_cache build *.egg-info
