"""cmisweep next to a Ray cluster that `ray start` made on this machine: a run without --address
starts a Ray of its own (it used to join that cluster through the address file Ray leaves behind,
and crash on a local-only option); a run with --address joins it. Real `ray start`, stopped by PID."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmisweep.sweep.local_cluster import free_port
from cmisweep.sweep.trainable import node_scratch
from conftest import need_data
from helpers import cli, tiny_space

pytestmark = pytest.mark.slow
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where ray.init() looks for "the" cluster


def _one_trial(tmp_path, name, search=None):
    space = tiny_space(name, search=search or {"presets": ["beta"], "gamma": [0.0], "seeds": [0]},
                       trial={**tiny_space()["trial"], "evaluation": {"enabled": False}})
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(space))
    return p


def _jobs(port: int) -> int:
    """Jobs (drivers) the cluster has seen, counting this probe's own connection: the cluster numbers
    its jobs 1, 2, ... as drivers connect, and the probe's job id (public: the runtime context) is
    that number, little-endian. The state API (ray.util.state.list_jobs) would need the dashboard,
    which this head runs without."""
    code = ("import ray; ray.init(address='127.0.0.1:%d', log_to_driver=False, configure_logging=False); "
            "print(int.from_bytes(bytes.fromhex(ray.get_runtime_context().get_job_id()), 'little'))" % port)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow(95)
def test_runs_beside_and_on_a_ray_start_cluster(tmp_path):
    need_data("fashion-mnist")
    saved = ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None
    port = free_port()
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             # Ray's default temp dir: the address file that ray.init() finds goes there
                             "--num-cpus=1", "--object-store-memory=100000000", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        _wait_port(port)
        time.sleep(2)
        env = {"RAY_ADDRESS": ""}
        beside = cli("run", _one_trial(tmp_path, "beside"), "--results", tmp_path / "results", cwd=tmp_path, env=env)
        assert beside.returncode == 0, beside.stderr[-3000:]
        assert "object_store_memory" not in beside.stderr
        assert _jobs(port) == 1  # only our probe's own: the run beside did not join the cluster
        # on the cluster, a plug-in regularizer by an import path the driver alone has on its path:
        # its module reaches the workers through runtime_env py_modules
        plugin = {"presets": ["club"], "gamma": [0.3], "seeds": [0], "plugins": {"club": "club:Club"}}
        examples = str(Path(__file__).resolve().parents[1] / "examples")
        on = cli("run", _one_trial(tmp_path, "on", plugin), "--results", tmp_path / "results", "--address",
                 f"127.0.0.1:{port}", cwd=tmp_path,
                 env={**env, "PYTHONPATH": os.pathsep.join([examples, os.environ.get("PYTHONPATH", "")])})
        assert on.returncode == 0, on.stderr[-3000:]
        for name, preset in (("beside", "vanilla"), ("on", "club")):
            trials = pd.read_parquet(tmp_path / "results" / name / "trials.parquet")
            assert list(trials["status"]) == ["FINISHED"] and list(trials["preset"]) == [preset], name
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


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _wait_port(port: int, timeout: float = 60) -> None:
    _wait_for(lambda: _listens(port), timeout, f"something to listen on {port}")


class Services:
    """An S3 API server (moto's server mode) with a bucket, and `mlflow server` (HTTP, one worker),
    on 127.0.0.1: `storage` and `uri` to give cmisweep, `s3` (pyarrow) and `env` for the CLI."""

    def __init__(self, tmp_path):
        import pyarrow.fs

        self.tmp_path, s3_port, self.mlflow_port = tmp_path, free_port(), free_port()
        self.env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        self.moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.mlflow = _mlflow_server(tmp_path, self.mlflow_port, "server.db")
        _wait_port(s3_port)
        _wait_port(self.mlflow_port, 90)
        self.s3 = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_port}", scheme="http",
                                          access_key="test", secret_key="test", allow_bucket_creation=True)
        self.s3.create_dir("sweeps")
        self.storage = f"s3://sweeps/cmisweep?endpoint_override=127.0.0.1:{s3_port}&scheme=http"
        self.uri = f"http://127.0.0.1:{self.mlflow_port}"

    def mlflow_down(self, seconds: float) -> None:
        """The tracking server goes away (killed), and comes back on the same port and store."""
        os.killpg(self.mlflow.pid, signal.SIGKILL)
        self.mlflow.wait()
        time.sleep(seconds)
        self.mlflow = _mlflow_server(self.tmp_path, self.mlflow_port, "server.db")
        _wait_port(self.mlflow_port, 90)

    def close(self) -> None:
        for proc in (self.moto, self.mlflow):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass


@pytest.fixture
def services(tmp_path):
    s = Services(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _cmdline(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def _mlflow_server(tmp_path, port, db="down.db"):
    return subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / db}", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


@pytest.mark.slow(20)
def test_a_tracking_server_down_for_a_while_delays_the_data_but_loses_none(tmp_path, monkeypatch, capsys):
    """The sweep's tracking calls while `mlflow server` is down are kept and replayed in order when
    it is back; a server that stays down leaves them counted (the sweep then exits 5 with one line)."""
    from mlflow.tracking import MlflowClient

    from cmisweep.sweep import tracking
    from cmisweep.sweep.outbox import Outbox

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the runner sets it: fail fast, keep
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path, port)
    try:
        _wait_port(port, 90)
        # the trial logger's outbox is another object (Tune's restored copy): it reports through a file
        trials_outbox = Outbox(tmp_path / "unlogged.json")
        run = tracking.SweepRun(uri, "outage", "sweep-outage", "outage", None, trial_outbox=trials_outbox.count_file)
        parent = run.start()
        client = MlflowClient(uri)
        run.outbox.call(client.log_metric, parent, "m", 0.0, 0, 0)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes away mid-sweep
        server.wait()
        for step in (1, 2, 3):
            run.outbox.call(client.log_metric, parent, "m", float(step), 0, step)
        trials_outbox.call(client.set_tag, parent, "from_trials", "yes")
        run.finish()  # closing the parent run is kept too
        assert len(run.outbox) == 4 and len(trials_outbox) == 1
        assert "keeping calls to replay" in capsys.readouterr().err
        assert run.unlogged(wait_s=1) == 5  # still down: nothing is dropped, the other outbox's call counted
        server = _mlflow_server(tmp_path, port)  # back, same store
        _wait_port(port, 90)
        assert trials_outbox.drain(wait_s=60) == 0
        assert run.unlogged(wait_s=60) == 0
        assert [m.value for m in client.get_metric_history(parent, "m")] == [0.0, 1.0, 2.0, 3.0]
        assert client.get_run(parent).info.status == "FINISHED"
        assert client.get_run(parent).data.tags["from_trials"] == "yes"
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass



# the fixed node id that Ray's fake multi-node provider gives the head (FAKE_HEAD_NODE_ID of its
# private module ray.autoscaler._private.fake_multi_node.node_provider, Ray 2.60)
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"


def _worker_raylets() -> dict[int, str]:
    """{pid: node id} of the raylets of the fake provider's worker nodes (the provider gives each
    node its id through RAY_OVERRIDE_NODE_ID_FOR_TESTING, the head too: its fixed id is left out)."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit() or not _cmdline(p).split("\0")[0].endswith("/raylet"):
            continue
        try:
            env = open(f"/proc/{p}/environ", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        ids = [e.split("=", 1)[1] for e in env if e.startswith("RAY_OVERRIDE_NODE_ID_FOR_TESTING=")]
        if ids and ids[0] != FAKE_HEAD_NODE_ID:
            out[int(p)] = ids[0]
    return out


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


EPOCH_LINE = re.compile(r"^\[[^]]*\] (\S+): epoch (\d+)/", re.M)


@pytest.mark.slow(200)
def test_rehearsal_with_a_lost_worker_node_and_a_tracking_outage(tmp_path, services):
    """The cluster path on this machine, and two faults in it. cluster/local.yaml through `cmisweep
    cluster rehearse`, trial checkpoints on S3 (moto), tracking through `mlflow server`. The head
    takes no trial; eight 0.25-GPU trials make the autoscaler start two GPU worker nodes, four
    trials sharing each one's GPU. (1) Once every trial has a checkpoint on S3, one node's raylet
    is killed and its disk (its scratch directory) removed: its trials come back on the other node
    from their last S3 checkpoint, not from epoch 1. (The fake provider never replaces a lost node:
    its nodes stay "uninitialized" with node updaters off, and the autoscaler replaces only
    up-to-date ones.) (2) Then the MLflow server is down for 20 s while trials train, evaluate and
    end: the sweep goes on, and at the end every epoch's metrics, the final metrics and the models
    are in MLflow, one child run per trial. Nothing of Tune's is on the local disk, and nothing of
    the cluster is left running."""
    need_data("fashion-mnist")

    import pyarrow.fs
    from mlflow.tracking import MlflowClient

    import cmisweep

    epochs = 10
    trial = tiny_space()["trial"]
    trial["train"] = {**trial["train"], "epochs": epochs}
    space = tiny_space("faults", trial=trial, search={"presets": ["beta", "cmi"], "gamma": [0.3, 0.5],
                                                      "seeds": [0, 1]},
                       resources={"cpu": 0.5, "gpu": 0.25}, concurrency=8, max_failures=2)
    p = tmp_path / "faults.yaml"
    p.write_text(yaml.safe_dump(space))
    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "rehearse.log"
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmisweep", "cluster", "rehearse", str(root / "cluster" / "local.yaml"), str(p),
         "--results", str(tmp_path / "results"), "--tracking-uri", services.uri], cwd=tmp_path,
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **services.env, "CMISWEEP_STORAGE": services.storage, "RAY_ADDRESS": ""})
    try:
        def at_epoch_2():
            return len({n for n, e in EPOCH_LINE.findall(log.read_text()) if int(e) >= 2}) == 8

        _wait_for(at_epoch_2, 400, "every trial's second epoch")
        nodes = _worker_raylets()
        assert len(nodes) == 2, nodes
        # the node started last: its trials started last and are the furthest from their end (one
        # that ends before its node's death is noticed may report from there)
        pid, killed = max(nodes.items(), key=lambda kv: kv[1])
        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(node_scratch(killed), ignore_errors=True)
        at_kill = len(log.read_text())
        _wait_for(lambda: EPOCH_LINE.search(log.read_text(), at_kill + 1), 300, "training to go on after the kill")
        services.mlflow_down(20)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"rehearsal with two faults: {time.time() - t0:.0f} s")
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert "local cluster up at 127.0.0.1:" in text and "local cluster stopped" in text
    # (1) the trials went on from their checkpoints (no trial printed epoch 1 again); the killed
    # node's ended on the other one, four to a GPU there as before
    after = EPOCH_LINE.findall(text[at_kill:])
    assert after and all(int(e) > 1 for _, e in after), text[at_kill:]
    trials = pd.read_parquet(tmp_path / "results" / "faults" / "trials.parquet")
    assert list(trials["status"]) == ["FINISHED"] * 8
    assert set(trials["node_id"]) == set(nodes.values()) - {killed} and set(trials["gpu_ids"]) == {"0"}
    # each node had a scratch dir of its own: the survivor's is there, the lost node's stayed gone
    scratch = {n: node_scratch(n) for n in nodes.values()}
    assert scratch[trials["node_id"].iloc[0]].is_dir() and not scratch[killed].exists()
    for d in scratch.values():
        shutil.rmtree(d, ignore_errors=True)
    # Tune's experiment and the trials' checkpoints are in the bucket, not on the local disk
    files = [f.path for f in services.s3.get_file_info(pyarrow.fs.FileSelector("sweeps/cmisweep/faults/tune",
                                                                                recursive=True))]
    assert any("experiment_state" in f and f.endswith(".json") for f in files), files[:20]
    assert sum("checkpoint_" in f and f.endswith("checkpoint.pt") for f in files) >= 8, files[:20]
    assert not (tmp_path / "results" / "faults" / "tune").exists()
    # (2) the outage hit tracking calls, which were kept and replayed: nothing is missing
    assert "keeping calls to replay" in text
    client = MlflowClient(services.uri)
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    children = [c for c in runs if c.data.tags.get("cmisweep.role") == "trial"]
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert sum(c.data.tags.get("cmisweep.recovered") == "true" for c in children) == 4  # the killed node's
    for c in children:
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "epoch"))
        assert steps == list(range(1, epochs + 1)), (c.info.run_name, steps)
        assert "final/test/kl_z" in c.data.metrics
        assert any(a.path == "model" for a in client.list_artifacts(c.info.run_id))
    parent = [r for r in runs if r.data.tags.get("cmisweep.role") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    model, cfg = cmisweep.load(children[0].info.run_id, services.uri)  # a model back from the server
    assert type(model).__name__ == "PixelCNNVAE" and cfg.regularizer.knob in (0.3, 0.5)
    # and nothing of the cluster is left running (its processes name its workdir)
    assert not [q for q in os.listdir("/proc") if q.isdigit() and "cmisweep-cluster-" in _cmdline(q)]
