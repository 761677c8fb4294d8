# cmisweep: `make demo` runs the quickstart sweep, `make test` the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo data bench clean

install: $(STAMP)

# torch first and pinned exactly: the CPU wheel; an open range would pull the CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: install
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q

data: install
	$(BIN)/cmisweep data fetch --if-missing mnist fashion-mnist

# The main job: the quickstart sweep (beta vs cmi, reduced PixelCNN-VAE, ~5 min on 2 cores).
# Run again, it resumes (and reprints) the same sweep.
demo: install
	$(BIN)/cmisweep data fetch --if-missing fashion-mnist
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/cmisweep run search_spaces/quickstart.yaml \
		$$(test -f results/quickstart/sweep.json && echo --resume)
	@echo
	@echo "Browse the trials: $(BIN)/cmisweep ui quickstart   (then open http://127.0.0.1:5000)"
	@echo "Reports: results/quickstart/reports/report.md, results/quickstart/trials.parquet"

bench: install
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache
