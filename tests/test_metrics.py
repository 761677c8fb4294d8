import json
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import yaml

from cmisweep.metrics.probes import balanced_indices, fit_score
from cmisweep.metrics.samples import grid_array, save_grid
from helpers import tiny_trial


def test_balanced_indices():
    y = torch.arange(10).repeat(50)
    idx = balanced_indices(y, 7, seed=0)
    assert len(idx) == 70 and torch.equal(torch.bincount(y[idx]), torch.full((10,), 7))
    assert torch.equal(idx, balanced_indices(y, 7, seed=0)) and not torch.equal(idx, balanced_indices(y, 7, seed=1))


def test_probes_separate_informative_from_uninformative_features():
    rng = np.random.default_rng(0)
    y, yt = rng.integers(0, 10, 1000), rng.integers(0, 10, 2000)
    centers = rng.normal(size=(10, 8)) * 3
    good = fit_score(centers[y] + rng.normal(size=(1000, 8)), y, centers[yt] + rng.normal(size=(2000, 8)), yt)
    noise = fit_score(rng.normal(size=(1000, 8)), y, rng.normal(size=(2000, 8)), yt)
    assert good["lr"] > 0.9 and good["svm"] > 0.9
    assert noise["lr"] < 0.2 and noise["svm"] < 0.2


def test_sample_grid_layout(tmp_path):
    real = torch.zeros(3, 1, 28, 28)
    samples = torch.ones(30, 1, 28, 28)
    a = grid_array(real, samples)
    assert a.shape == (3 * 30 + 2, 11 * 30 + 2 + 6)
    assert a[2:30, 2:30].max() == 0 and a[2:30, -30:-2].min() == 1  # real first, samples after
    img = mpimg.imread(save_grid(real, samples, tmp_path / "g.png"))
    assert img.shape[:2] == a.shape


def _write(tmp_path, cfg):
    p = tmp_path / "trial.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_cmisweep_train_end_to_end(fmnist_dir, tmp_path):
    """`cmisweep train` on real Fashion-MNIST (a subset): progress per epoch, final metrics JSON."""
    cfg = tiny_trial(train={"epochs": 2})
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "cmisweep", "train", str(_write(tmp_path, cfg)), "--out", str(out),
                        "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "epoch 1/2" in r.stderr and "epoch 2/2" in r.stderr
    m = json.loads(r.stdout)
    for k in ("val/elbo", "test/elbo", "test/kl_z", "ihat_paper", "ihat_paper_std", "ihat_exact",
              "aolr", "aosvm", "mcas", "mcas_svm", "mcas_real", "mcas_real_svm", "best_epoch"):
        assert k in m, k
    assert m["test/elbo"] == pytest.approx(-(m["test/recon"] + m["test/kl_z"]), rel=1e-6)
    assert 0.0 <= m["aolr"] <= 1.0 and m["best_epoch"] in (1, 2)
    assert [m[f"ihat_paper_seed{i}"] for i in range(3)]  # three critic seeds
    assert (out / "samples.png").is_file() and (out / "checkpoint.pt").is_file()
    assert json.loads((out / "metrics.json").read_text()) == m
    # the one trial body (cmisweep.trial.finish): the same artifacts as a sweep's trial
    assert {"trial.yaml", "metrics.json", "curves.png", "samples.png", "model"} <= {f.name for f in out.iterdir()}
    # a run without a parent in the same MLflow store as the sweeps, its id printed; its model loads
    import re

    from mlflow.tracking import MlflowClient

    import cmisweep

    run_id = re.search(r"MLflow run ([0-9a-f]{32})", r.stderr).group(1)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.metrics["final/aolr"] == pytest.approx(m["aolr"]) and run.data.params["regularizer.knob"] == "0.3"
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert {"model", "samples.png", "trial.yaml"} <= arts and "checkpoint.pt" not in arts
    exp = MlflowClient(uri).get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens it on its runs
    for where in (run_id, out, out / "model"):
        model, back = cmisweep.load(where, uri)
        assert type(model).__name__ == "PixelCNNVAE" and back.model_dump() == yaml.safe_load((out / "trial.yaml").read_text())
    x = torch.zeros(2, 1, 28, 28)
    assert model.encode(x).mean.shape == (2, cfg["model"]["z_dim"])


@pytest.mark.slow(25)
def test_train_sample_and_load_find_the_same_store_through_mlflow_tracking_uri(fmnist_dir, tmp_path, monkeypatch):
    """One rule for the MLflow store (cmisweep.tracking_uri): with $MLFLOW_TRACKING_URI set and no
    --tracking-uri, `cmisweep train` logs its run there, and `cmisweep sample`, `cmisweep.load` and
    `cmisweep ui` find it there by its id; the default store under results/ stays untouched."""
    import re

    from helpers import cli

    import cmisweep

    store = tmp_path / "elsewhere" / "mlflow.db"
    store.parent.mkdir()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    cfg = tiny_trial(evaluation={"enabled": False})
    r = cli("train", _write(tmp_path, cfg), "--out", tmp_path / "out", cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", r.stderr).group(1)
    assert store.is_file() and not (tmp_path / "results" / "mlflow.db").exists()
    s = cli("sample", run_id, "--n", "2", "--out", tmp_path / "grid.png", cwd=tmp_path, env=env, timeout=300)
    assert s.returncode == 0, s.stderr[-3000:]
    assert (tmp_path / "grid.png").is_file()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    model, back = cmisweep.load(run_id)
    assert type(model).__name__ == "PixelCNNVAE" and back.model_dump() == yaml.safe_load(
        (tmp_path / "out" / "trial.yaml").read_text())
    assert _ui_serves_run(run_id, tmp_path, env)  # `cmisweep ui` with no flag serves the same store


def _ui_serves_run(run_id: str, cwd, env: dict) -> bool:
    """Start `cmisweep ui` (no sweep, no flag) under env, ask its REST API for the run, stop it."""
    import json
    import os
    import signal
    import time
    import urllib.request

    from cmisweep.sweep.local_cluster import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "ui", "--port", str(port)], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
                return json.load(urllib.request.urlopen(url, timeout=5))["run"]["info"]["run_id"] == run_id
            except urllib.error.HTTPError:
                return False  # the server answers, but its store has no such run
            except OSError:
                time.sleep(0.5)
        return False
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_cmisweep_train_bad_config_exits_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: -1\n")
    r = subprocess.run([sys.executable, "-m", "cmisweep", "train", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {p}: train.epochs: expected a value greater than or equal to 0, got -1"
    assert "Traceback" not in r.stderr
