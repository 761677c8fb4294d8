"""The service's other faces: dry-run plans, the MLflow UI, the cluster config."""
import json
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cmisweep.errors import ConfigError
from cmisweep.sweep.cluster import check
from cmisweep.sweep.local_cluster import alive, free_port
from conftest import ROOT
from helpers import cli, tiny_space, tiny_trial


@pytest.mark.slow(55)
def test_dry_run_prints_plan_and_cost_without_starting(tmp_path):
    r = cli("run", ROOT / "search_spaces" / "fmnist.yaml", "--dry-run", "--results", tmp_path / "results",
            "--set", "trial.model.maps=8", "--set", "trial.evaluation.ihat.batch_size=10",
            "--set", "trial.evaluation.ihat.seeds=1", cwd=tmp_path)
    # a smaller model and I-hat: the same plan, measured sooner (the I-hat's pricing has tests of its own)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sweep fmnist: 84 trials (grid)" in r.stdout and "beta_g0.1_s0" in r.stdout and "34 more" in r.stdout
    assert "measured step time here" in r.stdout and "days here" in r.stdout  # 300 epochs on 2 CPU cores
    assert not (tmp_path / "results").exists()


def test_the_dry_run_prices_the_deferred_metrics_as_a_stage_of_their_own(tmp_path, fmnist_dir):
    """With evaluation.defer, the trial's evaluation leaves I-hat and mCAS out, and the plan prices
    them apart, per trial and for `cmisweep evaluate` over every trial."""
    space = tiny_space("staged")
    space["trial"]["evaluation"]["defer"] = ["ihat", "mcas"]
    space["trial"]["evaluation"]["ihat"]["converge"] = True
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(space))
    r = cli("run", p, "--dry-run", "--results", tmp_path / "results", cwd=tmp_path,
            env={"CMISWEEP_DATA": str(fmnist_dir.parent)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "deferred (ihat, mcas): ~" in r.stdout and "cmisweep evaluate --trials all" in r.stdout
    assert "(ihat " not in r.stdout.split("evaluation at training")[1].splitlines()[0]
    assert "I-hat until converged is priced at its least" in r.stdout  # the doubling rule
    space["trial"]["evaluation"]["defer"] = []
    space["trial"]["evaluation"]["ihat"] = {"converge": False}
    p.write_text(yaml.safe_dump(space))
    r = cli("run", p, "--dry-run", "--results", tmp_path / "results", cwd=tmp_path,
            env={"CMISWEEP_DATA": str(fmnist_dir.parent)})
    assert "(ihat " in r.stdout and "deferred (" not in r.stdout
    assert "priced at its least" not in r.stdout  # fixed steps: priced as they run


def test_the_dry_run_prices_the_ihat_a_trial_runs(monkeypatch):
    """measure_eval times ihat_metrics itself, the trial's I-hat (critic ensembles, precision 'auto'
    resolved there, on the trial's device), with the trial's critic settings: only the size (steps,
    images) is smaller. Fails if the plan times another path or another precision."""
    from cmisweep.config import TrialConfig
    from cmisweep.metrics import mutual_info
    from cmisweep.sweep.plan import measure_eval
    from cmisweep.device import resolve_device

    ihat = {"seeds": 2, "steps": 50, "batch_size": 10, "n_train": 100, "n_eval": 100, "width": 16}
    cfg = TrialConfig.model_validate(tiny_trial(evaluation={"ihat": ihat, "mcas": False, "sample_grid": False}))
    calls, real = [], mutual_info.ihat_metrics

    def spy(model, data, ev, seed=0):
        calls.append((ev.ihat, data.val_x.device))
        return real(model, data, ev, seed)

    monkeypatch.setattr(mutual_info, "ihat_metrics", spy)
    assert measure_eval(cfg)["ihat"] > 0
    assert calls
    size = {"steps", "n_train", "n_eval", "converge"}  # one fixed-step run is the doubling rule's unit
    for ic, device in calls:
        assert ic.model_dump(exclude=size) == cfg.evaluation.ihat.model_dump(exclude=size)
        assert device == resolve_device(cfg.train.device)


def test_local_run_of_a_gpu_space_without_gpu_is_refused_before_anything_starts(tmp_path):
    import torch

    # asked first: skipping when the command succeeded would hide a refusal that stopped working
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    space = tiny_space("gpu", resources={"cpu": 1, "gpu": 0.25})
    p = tmp_path / "gpu.yaml"
    p.write_text(yaml.safe_dump(space))
    r = cli("run", p, "--results", tmp_path / "results", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "resources.gpu" in r.stderr and "--set resources.gpu=0" in r.stderr
    assert not (tmp_path / "results").exists()


def test_cluster_config_matches_rays_schema(tmp_path):
    config = check(ROOT / "cluster" / "gpu.yaml")
    assert config["head_node_type"] in config["available_node_types"]
    commands = " ".join(config["setup_commands"] + config["head_setup_commands"])
    assert "pip install -q -e ." in commands and "mlflow server" in commands  # torch: pyproject.toml's pin
    assert "--host 127.0.0.1" in commands and "--workers 1" in commands
    bad = {k: v for k, v in config.items() if k != "provider"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="provider: required key is missing"):
        check(tmp_path / "c.yaml")


def test_ui_serves_the_sweeps_store_on_localhost(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    client.create_experiment("some-sweep")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "ui", "--results", str(results), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        t0, ok = time.time(), False
        while time.time() - t0 < 90 and not ok:
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        assert ok, "the UI did not come up"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
        names = {e["name"] for e in json.load(urllib.request.urlopen(req, timeout=10))["experiments"]}
        assert "some-sweep" in names
        listening = open("/proc/net/tcp").read().splitlines()[1:]
        local = {ln.split()[1] for ln in listening if ln.split()[3] == "0A" and int(ln.split()[1].split(":")[1], 16) == port}
        assert local == {f"0100007F:{port:04X}"}  # 127.0.0.1 only
    finally:
        import os
        import signal

        server = _descendants(proc.pid)  # mlflow server and its uvicorn workers
        os.kill(proc.pid, signal.SIGTERM)  # cmisweep ui alone, as a service manager would stop it
        out = proc.communicate(timeout=30)[0]
    assert f"open http://127.0.0.1:{port}" in out
    assert len(server) >= 2  # the server and at least one worker were running

    def listening_on_port() -> list[str]:
        rows = open("/proc/net/tcp").read().splitlines()[1:]
        return [ln for ln in rows if ln.split()[3] == "0A" and int(ln.split()[1].split(":")[1], 16) == port]

    # nothing of the server outlives it: waited for (a worker may take a moment to exit), bounded
    deadline = time.monotonic() + 20
    while ([pid for pid in server if alive(pid)] or listening_on_port()) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in server if alive(pid)]
    assert left == [], [open(f"/proc/{pid}/cmdline").read().replace("\0", " ") for pid in left]
    assert not listening_on_port()


def _descendants(pid: int) -> list[int]:
    import os

    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_synth_speech_command(tmp_path):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    r = cli("data", "synth-speech", "--out", tmp_path / "c", "--speakers", 4, "--utterances", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "c").glob("*/*.wav"))) == 8 and (tmp_path / "c" / "speakers.csv").is_file()
    again = cli("data", "synth-speech", "--out", tmp_path / "c", "--speakers", 4, cwd=tmp_path)
    assert again.returncode == 2 and "c" in again.stderr  # an existing corpus is never overwritten
