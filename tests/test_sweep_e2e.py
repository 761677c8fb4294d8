"""End to end: real sweeps of tiny trials (Ray + MLflow sqlite + real Fashion-MNIST)."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import need_data
from helpers import cli, tiny_space

pytestmark = pytest.mark.slow


def runs_of(results, name):
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("cmisweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("cmisweep.role") == "trial"]
    return client, parents, children


def write_space(tmp_path, space):
    p = tmp_path / f"{space['name']}.yaml"
    p.write_text(yaml.safe_dump(space))
    return p


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """One small real sweep (beta, cmi and the vanilla point), shared by the tests that read it:
    run once per session even when they land on different pytest-xdist workers (the first to ask
    runs it under a file lock in the directory the workers share; the others wait and read it)."""
    import json

    from filelock import FileLock

    need_data("fashion-mnist")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    tmp_path = shared / "e2e-shared"
    done = tmp_path / "cli.json"
    with FileLock(str(shared / "e2e-shared.lock")):
        if not done.exists():
            tmp_path.mkdir(exist_ok=True)
            r = cli("run", write_space(tmp_path, tiny_space("e2e")), "--results", tmp_path / "results", cwd=tmp_path)
            done.write_text(json.dumps({"args": r.args, "returncode": r.returncode, "stdout": r.stdout,
                                        "stderr": r.stderr}))
    return tmp_path, subprocess.CompletedProcess(**json.loads(done.read_text()))


@pytest.mark.slow(100)
def test_grid_sweep_end_to_end(finished_sweep):
    tmp_path, r = finished_sweep
    assert r.returncode == 0, r.stderr[-3000:]
    assert "epoch 1/1" in r.stderr and "done (3/3 trials)" in r.stderr
    assert "vanilla_g0_s0" in r.stdout and "cmi_g0.3_s0" in r.stdout  # the summary table
    d = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(d / "trials.parquet")
    assert sorted(trials["name"]) == ["beta_g0.3_s0", "cmi_g0.3_s0", "vanilla_g0_s0"]
    for col in ("trial_id", "status", "error", "preset", "gamma", "alpha", "seed", "final/test/kl_z",
                "final/aolr", "final/aosvm", "final/mcas", "final/mcas_real", "final/ihat_paper", "final/ihat_exact"):
        assert col in trials.columns, col
    assert (trials["status"] == "FINISHED").all() and trials["final/aolr"].between(0, 1).all()
    assert {"collapsed", "repeat_of"} <= set(trials.columns) and trials["repeat_of"].isna().all()
    # the machine and the resolved precision each trial ran with (bf16 kernels differ between CPUs)
    assert trials["cpu_model"].str.len().gt(0).all() and set(trials["precision"]) <= {"bf16", "fp32"}
    assert trials["final/active_units"].between(0, 64).all()
    # the per-epoch history, so that the committed files alone can rebuild the reports
    epochs = pd.read_parquet(d / "epochs.parquet")
    assert sorted(epochs["name"]) == sorted(trials["name"]) and (epochs["epoch"] == 1).all()
    assert epochs["val/kl_z"].notna().all() and epochs["val/elbo"].notna().all()
    # the local Ray's node scratch dir went with it (one per sweep used to pile up in /tmp)
    from cmisweep.sweep.trainable import node_scratch

    assert trials["node_id"].nunique() == 1 and not node_scratch(trials["node_id"].iloc[0]).exists()
    front = pd.read_parquet(d / "frontier.parquet")
    assert set(front.columns) == {"preset", "score", "gamma", "alpha", "kl_z", "value", "n_seeds", "ref_kl_z",
                                  "ref_value"}  # ref_*: the hypervolume's reference point
    assert {"beta", "cmi"} <= set(front["preset"]) and {"AoLR", "mCAS"} <= set(front["score"])
    assert (front["ref_kl_z"] > trials["final/test/kl_z"].max()).all()
    hv = pd.read_csv(d / "reports" / "hypervolume.csv")
    assert {"beta", "cmi"} <= set(hv["preset"]) and (hv["hypervolume"] >= 0).all()
    for f in ("kl_vs_aolr.png", "kl_vs_mcas.png", "report.md", "paired_tests.csv", "claims.csv"):
        assert (d / "reports" / f).is_file(), f
    client, parents, children = runs_of(tmp_path / "results", "e2e")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["cmisweep.trial_id"] for c in children} == set(trials["trial_id"])
    child = next(c for c in children if c.info.run_name == "cmi_g0.3_s0")
    assert child.data.params["regularizer.preset"] == "cmi" and child.data.params["regularizer.knob"] == "0.3"
    assert child.data.params["objective.uses_c"] == "True" and "train.lr" in child.data.params
    # one name per quantity: beta's knob (the searched gamma) is J's alpha, so w_z = 0.7 and w_c = 0;
    # no param but the searched one is called gamma
    beta = next(c for c in children if c.info.run_name == "beta_g0.3_s0").data.params
    assert (beta["regularizer.knob"], beta["objective.w_z"], beta["objective.w_m"], beta["objective.w_c"]) == (
        "0.3", "0.7", "0.3", "0.0")
    assert not [k for k in beta if "gamma" in k]
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}  # what `cmisweep train` writes too
    assert {"trial.yaml", "metrics.json", "curves.png", "samples.png"} <= arts, arts
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val/elbo")] == [1]
    assert child.data.metrics["final/aolr"] == pytest.approx(float(trials.set_index("name").loc["cmi_g0.3_s0", "final/aolr"]))
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"samples.png", "trial.yaml", "metrics.json", "curves.png"} <= arts
    assert "reports" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # every finished trial's best model is an MLflow model: MLflow and cmisweep load it back
    import mlflow.pytorch
    from matplotlib.image import imread

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/model")
    assert type(model).__name__ == "PixelCNNVAE"
    r = cli("sample", child.info.run_id, "--n", "3", "--out", tmp_path / "grid.png", "--tracking-uri", uri, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    grid = imread(tmp_path / "grid.png")  # 10 classes x (1 real + 3 samples) tiles of 28 px, 2 px apart
    assert grid.shape[:2] == (10 * 30 + 2, 4 * 30 + 2 + 6), grid.shape
    # a second run of the same space is refused: it would mix two sweeps
    again = cli("run", tmp_path / "e2e.yaml", "--results", tmp_path / "results", cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
    # `cmisweep report` rebuilds the reports from Tune's state
    (d / "trials.parquet").unlink()
    rep = cli("report", "e2e", "--results", tmp_path / "results", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert pd.read_parquet(d / "trials.parquet").equals(trials)
    # --against: this sweep's points against a front; its own beta front holds beta's point and
    # vanilla's, so neither lies beyond it. A bad --against is one line, and writes nothing.
    # (the sweep named by its directory, relative to the working directory, not under --results)
    rep = cli("report", "results/e2e", "--against", d / "trials.parquet", "--presets", "beta", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    vs = pd.read_csv(d / "reports" / "versus_e2e.csv")
    aolr = vs[vs["score"] == "AoLR"].set_index("preset")
    assert not aolr.loc["beta", "beyond"] and not aolr.loc["vanilla", "beyond"] and "cmi" in aolr.index
    assert (d / "reports" / "versus_e2e_aolr.png").is_file() and "beyond the front of beta" in (
        d / "reports" / "versus_e2e.md").read_text()
    # a directory that is not a sweep is named as given, not looked up under --results
    miss = cli("report", "results/nowhere", cwd=tmp_path)
    assert miss.returncode == 2 and "no sweep at results/nowhere " in miss.stderr, miss.stderr
    before = (d / "trials.parquet").stat().st_mtime_ns
    bad = cli("report", "e2e", "--results", tmp_path / "results", "--against", tmp_path / "nowhere", cwd=tmp_path)
    assert bad.returncode == 2 and "--against" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert (d / "trials.parquet").stat().st_mtime_ns == before


@pytest.mark.slow(20)
def test_mlflow_ui_in_a_browser(finished_sweep):
    """`cmisweep ui` as a person sees it, in headless Chromium: the page it prints opens the
    experiment on its training runs (not MLflow 3's GenAI view), the parent lists its children and
    carries the headline plot, a child shows AoLR and its samples.png."""
    from browser import chrome, serve_ui

    from cmisweep.sweep.local_cluster import free_port

    tmp_path, r = finished_sweep
    assert r.returncode == 0, r.stderr[-2000:]
    _, parents, children = runs_of(tmp_path / "results", "e2e")
    parent, child = parents[0], next(c for c in children if c.info.run_name == "cmi_g0.3_s0")
    with serve_ui("e2e", tmp_path / "results", free_port()) as page, chrome() as browser:
        experiment = page.split("?")[0]
        # the address cmisweep ui printed; the list first renders with a partial count while the
        # children load (CI once read the page at that moment), so wait for the full one
        body = browser.open(page, "4 matching runs")  # the parent and its 3 children
        browser.screenshot(tmp_path / "experiment.png")
        assert "/runs" in browser.current_url and "Token Usage" not in body, body[:500]
        assert "4 matching runs" in body, [line for line in body.splitlines() if "matching" in line]
        body = browser.open(f"{experiment}/runs/{parent.info.run_id}?workflowType=machine_learning",
                            "Child runs", "vanilla_g0_s0", "Sweep e2e")
        assert {"cmi_g0.3_s0", "beta_g0.3_s0", "vanilla_g0_s0"} <= set(body.replace(",", " ").split()), body[:800]
        assert "Sweep e2e: 3 trials" in body
        assert browser.image_loaded("get-artifact?path=reports%2Fkl_vs_aolr.png")  # the plot in the description
        browser.screenshot(tmp_path / "parent.png")
        body = browser.open(f"{experiment}/runs/{child.info.run_id}?workflowType=machine_learning",
                            "final/aolr")
        assert "final/aolr" in body and f"{child.data.metrics['final/aolr']:.4f}"[:5] in body
        browser.open(f"{experiment}/runs/{child.info.run_id}/artifacts/samples.png?workflowType=machine_learning",
                     "samples.png")
        assert browser.image_loaded("blob:")  # the artifact viewer shows the PNG
        browser.screenshot(tmp_path / "child_samples.png")


def _wait_for(log, predicate, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = log.read_text() if log.exists() else ""
        if predicate(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"timed out; log:\n{text[-3000:]}")


@pytest.mark.slow(55)
def test_driver_killed_mid_sweep_then_resumed(fmnist_dir, tmp_path):
    """SIGKILL the driver (and the Ray it started) while trials run; --resume finishes every trial,
    without training a finished one again, with exactly one MLflow child run per trial."""
    space = tiny_space("killed", search={"presets": ["beta", "cmi"], "gamma": [0.3], "seeds": [0]},
                       trial={**tiny_space()["trial"], "train": {"epochs": 4, "batch_size": 50, "lr": 1e-3,
                                                                  "steps_per_epoch": 6}}, concurrency=1)
    path = write_space(tmp_path, space)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "run", str(path), "--results", "results"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # kill once one trial has finished and another is part-way through its epochs, past its
        # second epoch: Tune records a checkpoint in its experiment state only after the result
        # that carries it is synced, so a kill right after epoch 1 may rightly restart from scratch
        _wait_for(log, lambda t: "done (1/2" in t and any(f"epoch {e}/4" in t.split("done (1/2")[-1]
                                                          for e in (2, 3)))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()
    first = log.read_text()
    finished_before = {ln.split(":")[0].split("] ")[-1] for ln in first.splitlines() if ": evaluated" in ln}
    assert finished_before
    in_flight = {ln.split(":")[0].split("] ")[-1] for ln in first.splitlines() if ": epoch" in ln} - finished_before
    r = cli("run", path, "--results", "results", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in finished_before:  # no finished trial is trained again
        assert f"{name}: epoch" not in r.stderr
    for name in in_flight:  # the interrupted one continues from its last checkpoint
        assert f"{name}: epoch 1/4" not in r.stderr and f"{name}: epoch 4/4" in r.stderr
    trials = pd.read_parquet(tmp_path / "results" / "killed" / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "FINISHED").all()
    client, parents, children = runs_of(tmp_path / "results", "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and sorted(c.data.tags["cmisweep.trial_id"] for c in children) == sorted(trials["trial_id"])
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:  # every epoch logged once, none twice
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val/elbo")] == [1, 2, 3, 4]


@pytest.mark.slow(36)
def test_speech_sweep_reports_speaker_metrics(tmp_path):
    """The DSAE plugs into the same trainable, tracker and reports: EER and VC-mCAS land in
    trials.parquet, the frontier has KL(z) vs EER(z)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        if os.environ.get("CMISWEEP_REQUIRE_DATA") == "1":
            pytest.fail("espeak-ng is not installed (make system-deps)")
        pytest.skip("espeak-ng is not installed")
    from cmisweep.data.speech.synth import synth_corpus
    from helpers import tiny_speech_space

    corpus = synth_corpus(tmp_path / "corpus", speakers=8, utterances=3, seed=0)
    r = cli("run", write_space(tmp_path, tiny_speech_space(corpus)), "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "results" / "speech-tiny"
    trials = pd.read_parquet(d / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "FINISHED").all()
    for col in ("final/eer_z", "final/eer_s", "final/vc_mcas"):  # rates, stored as fractions
        assert trials[col].between(0, 1).all(), col
    assert trials["final/ihat_exact"].notna().all() and trials["final/ihat_exact"].abs().lt(50).all()
    assert trials["final/test/kl_s"].gt(0).all()  # s is random in the DSAE: KL(s) is a real term
    # VC-mCAS as in App. 7 of the paper: 40 real segments, 10 pairs both ways; stored as a fraction
    assert (trials["final/vc_mcas_n_real"] == 40).all() and (trials["final/vc_mcas_n_pairs"] == 10).all()
    assert trials["final/vc_mcas"].between(0, 1).all()
    report = (d / "reports" / "report.md").read_text()
    assert "## EER(z) [%]" in report and "## VC-mCAS [%]" in report and "## -ELBO (nats, test)" in report
    front = pd.read_parquet(d / "frontier.parquet")
    assert "EER(z)" in set(front["score"])
    assert (d / "reports" / "kl_vs_eer_z.png").is_file()
    # the speech models are kept; the speaker VC-mCAS, which draws conversions from torch's global
    # generator, evaluated alone later equals what the trial recorded after I-hat, EER and VC-mCAS
    name = trials["name"].iloc[0]
    r = cli("evaluate", "speech-tiny", "--metrics", "vc_speaker", "--trials", name, "--results", tmp_path / "results",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    again = pd.read_parquet(d / "trials.parquet").set_index("name")
    assert again.loc[name, "final/vc_mcas_speaker"] == trials.set_index("name").loc[name, "final/vc_mcas_speaker"]
    assert pd.read_parquet(d / "evaluations.parquet")["metric"].unique().tolist() == ["vc_speaker"]
    _, _, children = runs_of(tmp_path / "results", "speech-tiny")
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    arts = {a.path for a in MlflowClient(uri).list_artifacts(children[0].info.run_id)}
    assert {"conversion.png", "model"} <= arts
    # the model comes back with its normalization; convert swaps z: SOURCE's voice, TARGET's words
    import numpy as np
    import soundfile as sf
    import torch

    import cmisweep

    run_id = children[0].info.run_id
    model, cfg = cmisweep.load(run_id, uri)
    assert cfg.model.kind == "dsae" and model.feature_mean.shape == (201,) and torch.isfinite(model.feature_std).all()
    wavs = sorted(corpus.rglob("*.wav"))
    speakers = {}
    for w in wavs:
        speakers.setdefault(w.parent.name, w)
    (src_a, src_b, target) = list(speakers.values())[:3]
    outs = []
    for src in (src_a, src_b):
        out = tmp_path / f"conv_{src.parent.name}.wav"
        r = cli("convert", run_id, src, target, "--out", out, "--tracking-uri", uri, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        audio, sr = sf.read(out)
        assert sr == 16000 and len(audio) == sf.info(target).frames and np.isfinite(audio).all()
        assert out.with_suffix(".png").is_file()
        outs.append(audio)
    assert not np.allclose(outs[0], outs[1])  # the voice follows the source's z
