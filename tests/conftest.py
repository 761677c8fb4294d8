"""Shared fixtures. Real data comes from $CMISWEEP_DATA (CI: ../shared/data); with
CMISWEEP_REQUIRE_DATA=1 a test that needs it fails instead of skipping."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if os.environ.get("CMISWEEP_DATA"):
    # CI passes a path relative to the repository root; tests change directories
    os.environ["CMISWEEP_DATA"] = str((ROOT / os.environ["CMISWEEP_DATA"]).resolve())
else:
    default = ROOT.parent / "shared" / "data"
    if default.is_dir():
        os.environ["CMISWEEP_DATA"] = str(default)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 3 workers on 2 cores: one thread each, and in the processes they start, or
    # OpenMP threads outnumber the cores and spin against each other
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch):
    """Each test names its MLflow store itself. cmisweep honours $MLFLOW_TRACKING_URI, so a
    developer's own, or one that mlflow.set_tracking_uri put into this worker's environment (it
    does), would send the runs of every later test's subprocesses to that store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)  # forgets the URI and takes it out of os.environ


def need_data(*relative: str) -> Path:
    """The real data directory $CMISWEEP_DATA/<relative>, or skip (fail under CMISWEEP_REQUIRE_DATA=1)."""
    base = os.environ.get("CMISWEEP_DATA")
    path = Path(base, *relative) if base else None
    if path is None or not path.exists():
        msg = f"real data not found: {path or '$CMISWEEP_DATA unset'}"
        if os.environ.get("CMISWEEP_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def fmnist_dir() -> Path:
    return need_data("fashion-mnist")


@pytest.fixture
def mnist_dir() -> Path:
    return need_data("mnist")


def pytest_collection_modifyitems(config, items):
    """Longest first, so that `make test`'s last minutes are not one worker alone on a long test.
    A long test carries its cost, `@pytest.mark.slow(seconds)` (its time alone, roughly); the rest
    keep their order after them. Under xdist (`-n N --maxschedchunk 1`) each worker is handed two
    tests at the start, in order: the first 2N are snaked (the longest with the shortest of them)
    so that no worker starts with two of the longest."""
    def cost(item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.args[0]) if mark is not None and mark.args else 0.0

    items.sort(key=cost, reverse=True)  # stable: the cheap ones stay in file order
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    head = items[:2 * n]
    if n and all(cost(i) > 0 for i in head):
        items[:2 * n] = [head[k // 2] if k % 2 == 0 else head[-1 - k // 2] for k in range(2 * n)]
