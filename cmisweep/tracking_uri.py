"""Which MLflow store a command uses: one rule for every command (README, "Getting the models back"),
so that `cmisweep train` writes a run where `cmisweep sample`, `cmisweep.load` and `cmisweep ui`
look for it:

1. --tracking-uri, given on the command line;
2. a sweep's own: its space's tracking.uri (recorded in results/<sweep>/sweep.json, which --resume,
   report and ui read);
3. $MLFLOW_TRACKING_URI, MLflow's own variable (the one mlflow's API and tools read too);
4. sqlite:///<results>/mlflow.db.

It imports nothing of cmisweep: trials and models (which never import cmisweep.sweep) read it, and
the sweep's commands too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

ENV = "MLFLOW_TRACKING_URI"


class TrackingURI(NamedTuple):
    uri: str
    # where the URI came from, as bad input names it (cmisweep.errors.ConfigError(file, key, ...))
    file: str | None
    key: str | None


def default_uri(results_root: str | Path) -> str:
    return f"sqlite:///{(Path(results_root) / 'mlflow.db').resolve()}"


def tracking_uri(flag: str | None = None, sweep_uri: str | None = None, results_root: str | Path = "results",
                 sweep_file: str | Path | None = None) -> TrackingURI:
    """The store of a command: `flag` (--tracking-uri), else `sweep_uri` (a sweep's tracking.uri,
    from `sweep_file`), else $MLFLOW_TRACKING_URI, else the sqlite file under `results_root`."""
    if flag:
        return TrackingURI(flag, "--tracking-uri", None)
    if sweep_uri:
        return TrackingURI(sweep_uri, None if sweep_file is None else str(sweep_file), "tracking.uri")
    if os.environ.get(ENV):
        return TrackingURI(os.environ[ENV], f"${ENV}", None)
    return TrackingURI(default_uri(results_root), "--results", None)
