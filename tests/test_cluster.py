"""cmisweep next to a Ray cluster that `ray start` made on this machine: a run without --address
starts a Ray of its own (it used to join that cluster through the address file Ray leaves behind,
and crash on a local-only option); a run with --address joins it. Real `ray start`, stopped by PID."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import need_data
from helpers import cli, tiny_space

pytestmark = pytest.mark.slow
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where ray.init() looks for "the" cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_trial(tmp_path, name):
    space = tiny_space(name, search={"presets": ["beta"], "gamma": [0.0], "seeds": [0]},
                       trial={**tiny_space()["trial"], "evaluation": {"enabled": False}})
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(space))
    return p


def _jobs(port: int) -> int:
    """Jobs (drivers) the cluster has seen, counting this probe's own connection."""
    code = ("import ray; ray.init(address='127.0.0.1:%d', log_to_driver=False, configure_logging=False); "
            "print(len(ray._private.state.jobs()))" % port)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


def test_runs_beside_and_on_a_ray_start_cluster(tmp_path):
    need_data("fashion-mnist")
    saved = ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None
    port = _free_port()
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             # Ray's default temp dir: the address file that ray.init() finds goes there
                             "--num-cpus=1", "--object-store-memory=100000000", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(2)
        env = {"RAY_ADDRESS": ""}
        beside = cli("run", _one_trial(tmp_path, "beside"), "--results", tmp_path / "results", cwd=tmp_path, env=env)
        assert beside.returncode == 0, beside.stderr[-3000:]
        assert "object_store_memory" not in beside.stderr
        assert _jobs(port) == 1  # only our probe's own: the run beside did not join the cluster
        on = cli("run", _one_trial(tmp_path, "on"), "--results", tmp_path / "results", "--address",
                 f"127.0.0.1:{port}", cwd=tmp_path, env=env)
        assert on.returncode == 0, on.stderr[-3000:]
        for name in ("beside", "on"):
            trials = pd.read_parquet(tmp_path / "results" / name / "trials.parquet")
            assert list(trials["status"]) == ["FINISHED"], name
        assert _jobs(port) == 3  # the two probes and the second run's driver: it ran on the cluster
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        if saved is None:
            ADDRESS_FILE.unlink(missing_ok=True)
        else:
            ADDRESS_FILE.write_text(saved)


def _wait_port(port: int, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def s3_and_mlflow(tmp_path):
    """An S3 API server (moto's server mode) with a bucket, and `mlflow server` (HTTP, one worker),
    on 127.0.0.1; yields (storage URI, tracking URI, pyarrow S3 filesystem, env for the CLI)."""
    import pyarrow.fs

    s3_port, mlflow_port = _free_port(), _free_port()
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(mlflow_port),
                               "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        _wait_port(s3_port)
        _wait_port(mlflow_port, 90)
        s3 = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_port}", scheme="http",
                                     access_key="test", secret_key="test", allow_bucket_creation=True)
        s3.create_dir("sweeps")
        yield (f"s3://sweeps/cmisweep?endpoint_override=127.0.0.1:{s3_port}&scheme=http",
               f"http://127.0.0.1:{mlflow_port}", s3, aws)
    finally:
        for proc in (moto, server):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_rehearsal_on_a_local_multi_node_cluster(tmp_path, s3_and_mlflow):
    """The cluster path on this machine: cluster/local.yaml through `cmisweep cluster rehearse`,
    trial checkpoints on S3 (moto), tracking through `mlflow server`. The head takes no trial, the
    autoscaler starts a GPU worker node on demand and four 0.25-GPU trials share its one GPU;
    nothing of Tune's lands on the local disk; the models reach MLflow; nothing is left running."""
    need_data("fashion-mnist")
    import pyarrow.fs
    from mlflow.tracking import MlflowClient

    import cmisweep

    storage, uri, s3, aws = s3_and_mlflow
    saved = ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None
    space = tiny_space("rehearse", search={"presets": ["beta", "cmi"], "gamma": [0.3], "seeds": [0, 1]},
                       resources={"cpu": 0.5, "gpu": 0.25}, concurrency=4)
    p = tmp_path / "rehearse.yaml"
    p.write_text(yaml.safe_dump(space))
    root = Path(__file__).resolve().parents[1]
    r = cli("cluster", "rehearse", root / "cluster" / "local.yaml", p, "--results", tmp_path / "results",
            "--tracking-uri", uri, cwd=tmp_path, env={**aws, "CMISWEEP_STORAGE": storage, "RAY_ADDRESS": ""},
            timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "local cluster up at 127.0.0.1:" in r.stdout and "local cluster stopped" in r.stdout
    trials = pd.read_parquet(tmp_path / "results" / "rehearse" / "trials.parquet")
    assert list(trials["status"]) == ["FINISHED"] * 4
    # one worker node (not the head: its id ends in 00000) ran all four, on GPU 0
    assert trials["node_id"].nunique() == 1 and not trials["node_id"].iloc[0].endswith("00000")
    assert set(trials["gpu_ids"]) == {"0"}
    # Tune's experiment and the trials' checkpoints are in the bucket, not on the local disk
    files = [f.path for f in s3.get_file_info(pyarrow.fs.FileSelector("sweeps/cmisweep/rehearse/tune",
                                                                       recursive=True))]
    assert any("experiment_state" in f and f.endswith(".json") for f in files), files[:20]
    assert sum("checkpoint_" in f and f.endswith("checkpoint.pt") for f in files) >= 4, files[:20]
    assert not (tmp_path / "results" / "rehearse" / "tune").exists()
    # tracked through the server: a parent, a child per trial, each child's model loads back
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rehearse").experiment_id])
    children = [c for c in runs if c.data.tags.get("cmisweep.role") == "trial"]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    model, cfg = cmisweep.load(children[0].info.run_id, uri)
    assert type(model).__name__ == "PixelCNNVAE" and cfg.regularizer.knob == 0.3
    # and nothing of the cluster is left running, Ray's address file as it was
    assert not [p for p in os.listdir("/proc") if p.isdigit() and "cmisweep-cluster-" in _cmdline(p)]
    assert (ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None) == saved


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def _mlflow_server(tmp_path, port):
    return subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'down.db'}", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def test_a_tracking_server_down_for_a_while_delays_the_data_but_loses_none(tmp_path, monkeypatch, capsys):
    """The sweep's tracking calls while `mlflow server` is down are kept and replayed in order when
    it is back; a server that stays down leaves them counted (the sweep then exits 5 with one line)."""
    from mlflow.tracking import MlflowClient

    from cmisweep.sweep import tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the runner sets it: fail fast, keep
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path, port)
    try:
        _wait_port(port, 90)
        run = tracking.SweepRun(uri, "outage", "sweep-outage", "outage", None)
        parent = run.start()
        client = MlflowClient(uri)
        tracking._safe("sweep-outage", client.log_metric, parent, "m", 0.0, 0, 0)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes away mid-sweep
        server.wait()
        for step in (1, 2, 3):
            tracking._safe("sweep-outage", client.log_metric, parent, "m", float(step), 0, step)
        run.finish()  # closing the parent run is kept too
        assert len(tracking.PENDING["sweep-outage"]) == 4
        assert "keeping calls to replay" in capsys.readouterr().err
        assert run.unlogged(wait_s=1) == 4  # still down: nothing is dropped
        server = _mlflow_server(tmp_path, port)  # back, same store
        _wait_port(port, 90)
        assert run.unlogged(wait_s=60) == 0
        assert [m.value for m in client.get_metric_history(parent, "m")] == [0.0, 1.0, 2.0, 3.0]
        assert client.get_run(parent).info.status == "FINISHED"
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        tracking.PENDING.pop("sweep-outage", None)

