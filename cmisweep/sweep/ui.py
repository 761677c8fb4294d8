"""`cmisweep ui`: the MLflow UI for a sweep's tracking store, lean and on 127.0.0.1.

`mlflow ui` with its defaults starts 15 processes and ~3 GiB; one worker with job execution off
starts in ~6 s with ~560 MiB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cmisweep.errors import ConfigError
from cmisweep.status import ExitCode
from cmisweep.sweep.tracking import default_uri


def tracking_uri_for(sweep: str | None, results_root: Path, uri: str | None) -> str:
    if uri:
        return uri
    if sweep:
        state = _sweep_dir(sweep, results_root) / "sweep.json"
        if not state.exists():
            raise ConfigError(None, "SWEEP", f"no sweep {sweep!r} under {results_root} (no {state})")
        return json.loads(state.read_text())["tracking_uri"]
    return default_uri(results_root)


def _sweep_dir(sweep: str, results_root: Path) -> Path:
    p = Path(sweep)
    return p if (p / "sweep.json").exists() else results_root / sweep


def server_command(uri: str, host: str, port: int) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return cmd, env


def serve(uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    if uri.startswith(("http://", "https://")):
        print(f"the tracking store is a server already: open {uri}")
        return ExitCode.OK
    cmd, env = server_command(uri, host, port)
    print(f"MLflow UI for {uri}\n  open http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: listening on {host}: anyone who reaches this port sees and edits the runs", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return ExitCode.OK
