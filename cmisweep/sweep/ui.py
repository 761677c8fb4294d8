"""`cmisweep ui`: the MLflow UI for a sweep's tracking store, lean and on 127.0.0.1.

`mlflow ui` with its defaults starts 15 processes and ~3 GiB; one worker with job execution off
starts in ~6 s with ~560 MiB.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cmisweep.errors import ConfigError
from cmisweep.status import ExitCode
from cmisweep.sweep.runner import find_sweep
from cmisweep.tracking_uri import tracking_uri


def tracking_uri_for(sweep: str | None, results_root: Path, uri: str | None) -> str:
    """The store to show: cmisweep.tracking_uri's rule, a sweep's recorded store second."""
    recorded = None
    if sweep and not uri:
        state = find_sweep(sweep, results_root) / "sweep.json"
        if not state.exists():
            raise ConfigError(None, "SWEEP", f"no sweep {sweep!r} under {results_root} (no {state})")
        recorded = json.loads(state.read_text())["tracking_uri"]
    return tracking_uri(uri, recorded, results_root).uri


def server_command(uri: str, host: str, port: int) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return cmd, env


def experiment_of(sweep: str | None, results_root: Path) -> str | None:
    """The MLflow experiment of a sweep (its space's tracking.experiment, else its name)."""
    if not sweep:
        return None
    import yaml

    space = yaml.safe_load((find_sweep(sweep, results_root) / "space.yaml").read_text()) or {}
    return (space.get("tracking") or {}).get("experiment") or space.get("name")


def page_url(base: str, uri: str, experiment: str | None) -> str:
    """The page to open: the sweep's experiment on its training runs. MLflow 3's UI opens in its
    GenAI view (traces, token usage) unless the address asks for workflowType=machine_learning."""
    page = f"{base.rstrip('/')}/#/experiments"
    if experiment:
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(uri).get_experiment_by_name(experiment)
        if exp is not None:
            page += f"/{exp.experiment_id}"
    return page + "?workflowType=machine_learning"


def serve(uri: str, host: str = "127.0.0.1", port: int = 5000, experiment: str | None = None) -> int:
    if uri.startswith(("http://", "https://")):
        print(f"the tracking store is a server already: open {page_url(uri, uri, experiment)}")
        return ExitCode.OK
    cmd, env = server_command(uri, host, port)
    print(f"MLflow UI for {uri}\n  open {page_url(f'http://{host}:{port}', uri, experiment)}  (Ctrl-C stops it)",
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: listening on {host}: anyone who reaches this port sees and edits the runs", flush=True)
    # the server in its own process group: mlflow server starts uvicorn workers below it, and a
    # stopped `cmisweep ui` (Ctrl-C or SIGTERM) must stop all of them, not only its direct child
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop_group(proc)
        return ExitCode.OK


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        return
    try:  # workers that outlived the server
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
