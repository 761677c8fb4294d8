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
	$(BIN)/cmisweep data fetch mnist fashion-mnist

bench: install
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache
