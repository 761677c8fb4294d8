# cmisweep: `make demo` runs the quickstart sweep, `make test` the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps test demo speech-demo cluster-demo data bench drift clean

install: system-deps $(STAMP)

# From Debian: espeak-ng synthesizes the open speech corpus (cmisweep data synth-speech);
# chromium and chromium-driver let the tests look at the MLflow UI in a real (headless) browser.
DEBIAN_PKGS := espeak-ng chromium chromium-driver
system-deps:
	@command -v espeak-ng >/dev/null && command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get install -y -q $(DEBIAN_PKGS) >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(DEBIAN_PKGS) >/dev/null; }; }
	@command -v espeak-ng >/dev/null && echo "espeak-ng: $$(command -v espeak-ng)"
	@command -v chromedriver >/dev/null && echo "chromium: $$(command -v chromium), $$(command -v chromedriver)"

# torch first and pinned exactly: the CPU wheel; an open range would pull the CUDA build.
# pip compiles the .pyc files here on purpose: with PYTHONDONTWRITEBYTECODE set (this machine sets
# it) a --no-compile install (33 s against 74 s) made every test process compile torch again, and
# make test twice as slow.
# The pin itself lives in pyproject.toml only.
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml | head -n 1)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check '$(TORCH_PIN)'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Three pytest workers (pytest-xdist) on 2 cores, one torch thread each (tests/conftest.py): the
# end-to-end tests also wait on process start-ups (Ray, MLflow, Python imports), which the third
# worker fills. The longest tests go first, one at a time to whichever worker is free
# (--maxschedchunk 1; the order: tests/conftest.py). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 3
test: install
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
		--maxschedchunk 1

data: install
	$(BIN)/cmisweep data fetch --if-missing mnist fashion-mnist

# The main job: the quickstart sweep (beta vs cmi, reduced PixelCNN-VAE, ~5 min on 2 cores).
# Run again, it resumes (and reprints) the same sweep.
demo: install
	$(BIN)/cmisweep data fetch --if-missing fashion-mnist
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/cmisweep run search_spaces/quickstart.yaml \
		$$(test -f results/quickstart/sweep.json && echo --resume)
	@echo
	@echo "Browse the trials: $(BIN)/cmisweep ui quickstart   (then open the address it prints)"
	@echo "Reports: results/quickstart/reports/report.md, results/quickstart/trials.parquet"

# The speech counterpart: synthesize the open corpus (~10 s), then a DSAE sweep (~5 min on 2 cores).
speech-demo: install
	test -f data/speech-synth/speakers.csv || $(BIN)/cmisweep data synth-speech --out data/speech-synth
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/cmisweep run search_spaces/speech-quick.yaml \
		$$(test -f results/speech-quick/sweep.json && echo --resume)

# The quickstart on a multi-node Ray cluster simulated on this machine (cluster/local.yaml: Ray's
# fake multi-node provider, a head without trials, GPU workers on demand): rehearse a cluster run.
cluster-demo: install
	$(BIN)/cmisweep data fetch --if-missing fashion-mnist
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/cmisweep cluster rehearse cluster/local.yaml \
		search_spaces/quickstart.yaml --results results/cluster-demo --set resources.gpu=0.25 \
		$$(test -f results/cluster-demo/quickstart/sweep.json && echo --resume)

# The figures of BENCHMARKS.md (about 30 minutes on 2 cores; needs Fashion-MNIST).
bench: install
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/sampling.py
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/sweep_overhead.py
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/memory.py
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/gpu.py
	$(BIN)/python bench/evaluation.py

# The search, resume and cluster end-to-end tests against the newest ray, optuna and mlflow the
# registry serves, in a venv of their own (.venv-drift): what the next release would break. Not
# called by .ci/run, so an upstream release cannot block a landing; DEVELOPERS.md records its runs.
DRIFT := .venv-drift
DRIFT_TESTS := tests/test_search_e2e.py tests/test_reliability.py tests/test_cluster.py tests/test_public_api.py \
	"tests/test_sweep_e2e.py::test_driver_killed_mid_sweep_then_resumed" "tests/test_sweep_e2e.py::test_grid_sweep_end_to_end"
drift: system-deps
	test -x $(DRIFT)/bin/python || $(PYTHON) -m venv $(DRIFT)
	$(DRIFT)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(DRIFT)/bin/python -m pip install -q --disable-pip-version-check '$(TORCH_PIN)'
	$(DRIFT)/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	# past the pins: pip warns that cmisweep asks for the pinned versions, and installs the newest
	-$(DRIFT)/bin/python -m pip install -q --disable-pip-version-check --upgrade 'ray[tune]' optuna mlflow 2>&1 | grep -v '^WARNING'
	$(DRIFT)/bin/python -c "import ray, optuna, mlflow; print('drift: ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__)"
	RAY_AUTH_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true $(DRIFT)/bin/python -m pytest -q -n $(TEST_WORKERS) \
		--maxschedchunk 1 $(DRIFT_TESTS)

clean:
	rm -rf $(VENV) $(DRIFT) .pytest_cache
