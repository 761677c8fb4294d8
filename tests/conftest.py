"""Shared fixtures. Real data comes from $CMISWEEP_DATA (CI: ../shared/data); with
CMISWEEP_REQUIRE_DATA=1 a test that needs it fails instead of skipping."""
from __future__ import annotations

import os
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
