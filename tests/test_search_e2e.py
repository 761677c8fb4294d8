"""Every search path end to end on real Fashion-MNIST: TPE and NSGA-II (Optuna, through Ray's
OptunaSearch and the seed replicates), with and without ASHA, and a killed NSGA-II sweep resumed.
Each checks the final metrics, what the Optuna study was told, the MLflow runs, the reports and
the exit code."""
import os
import signal
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest

from helpers import cli, tiny_space
from test_sweep_e2e import _wait_for, runs_of, write_space

pytestmark = pytest.mark.slow
KL, AOLR = "final/test/kl_z", "final/aolr"
NSGA2 = {"kind": "nsga2", "num_samples": 4, "population_size": 2, "seed": 3,
         "objectives": [{"metric": KL, "mode": "min"}, {"metric": AOLR, "mode": "max"}]}


def _trial(epochs=1, steps=3):
    t = tiny_space()["trial"]
    return {**t, "train": {**t["train"], "epochs": epochs, "steps_per_epoch": steps}}


def _study(results, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results / name / 'optuna.db'}")


def _check_study_told_seed_means(study, trials, metrics, n_points):
    """The study holds n_points COMPLETE trials, each told the mean of its replicates' final metrics."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == n_points, [t.state for t in study.trials]
    means = trials.groupby(["gamma", trials["alpha"].fillna(-1.0)])[metrics].mean()
    counts = trials.groupby(["gamma", trials["alpha"].fillna(-1.0)]).size()
    assert len(means) == n_points and (counts == len(trials) // n_points).all()  # no point proposed twice
    for t in done:
        key = (t.params["point/gamma"], t.params.get("point/alpha", -1.0))
        told = t.values
        assert told == pytest.approx([means.loc[key, m] for m in metrics], rel=1e-9), (key, told)


def _check_mlflow(results, name, trials):
    client, parents, children = runs_of(results, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["cmisweep.trial_id"] for c in children) == sorted(trials["trial_id"])
    return client, children


@pytest.mark.slow(40)
def test_tpe_sweep_without_scheduler(fmnist_dir, tmp_path):
    trial = _trial()  # with the per-epoch AoLR probe, which a sweep without MO-ASHA records only when asked
    trial["evaluation"] = {**trial["evaluation"], "epoch_probe": 5}
    space = tiny_space("tpe", trial=trial, search={"presets": ["beta", "cmi"], "gamma": {"low": 0.1, "high": 0.9},
                                                   "seeds": [0]},
                       algorithm={"kind": "tpe", "num_samples": 2, "objectives": [{"metric": AOLR, "mode": "max"}]})
    results = tmp_path / "results"
    r = cli("run", write_space(tmp_path, space), "--results", results, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pd.read_parquet(results / "tpe" / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "FINISHED").all() and trials[AOLR].between(0, 1).all()
    epochs = pd.read_parquet(results / "tpe" / "epochs.parquet")
    assert len(epochs) == 2 and epochs["val/aolr"].between(0, 1).all() and epochs["time/probe_s"].gt(0).all()
    study = _study(results, "tpe")
    told = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert told == pytest.approx(sorted(trials[AOLR]))
    _check_mlflow(results, "tpe", trials)
    assert "## Points the searcher tried" in (results / "tpe" / "reports" / "report.md").read_text()


def _asha(evaluate_stopped):
    # grace 1, reduction 2 and one trial at a time: the rungs (epochs 1, 2) and the order in which
    # trials reach them are fixed, so which trials ASHA stops does not depend on timing
    return {"kind": "asha", "metric": "val/elbo", "mode": "max", "grace_period": 1, "reduction_factor": 2,
            "evaluate_stopped": evaluate_stopped}


@pytest.mark.slow(40)
def test_tpe_sweep_with_asha_evaluates_stopped_trials(fmnist_dir, tmp_path):
    space = tiny_space("tpe-asha", trial=_trial(epochs=3, steps=4), concurrency=1, scheduler=_asha(True),
                       search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 2.0}, "seeds": [0, 1]},
                       algorithm={"kind": "tpe", "num_samples": 3, "objectives": [{"metric": AOLR, "mode": "max"}]})
    space["trial"]["regularizer"] = {"critic_width": 16, "allow_weights_above_one": True}
    results = tmp_path / "results"
    r = cli("run", write_space(tmp_path, space), "--results", results, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pd.read_parquet(results / "tpe-asha" / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) <= {"FINISHED", "STOPPED"}
    stopped = trials[trials["status"] == "STOPPED"]
    assert len(stopped) >= 1, trials[["name", "status", "epochs_done"]]
    assert trials[[KL, AOLR]].notna().all().all()  # stopped ones are evaluated too
    assert stopped["stopped_at"].isin([1, 2]).all() and (stopped["epochs_done"] == stopped["stopped_at"]).all()
    assert (trials.loc[trials["status"] == "FINISHED", "epochs_done"] == 3).all()
    assert "stopped by the scheduler at epoch" in r.stderr and "stopped_at" in r.stdout
    _check_study_told_seed_means(_study(results, "tpe-asha"), trials, [AOLR], 3)
    client, children = _check_mlflow(results, "tpe-asha", trials)
    by_trial = {c.data.tags["cmisweep.trial_id"]: c for c in children}
    for _, row in stopped.iterrows():
        run = by_trial[row["trial_id"]]
        assert run.data.tags["cmisweep.status"] == "STOPPED"
        assert run.data.tags["cmisweep.stopped_at"] == str(row["stopped_at"])
        assert run.data.metrics[AOLR] == pytest.approx(row[AOLR])
        assert "samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow(45)
def test_grid_sweep_with_asha_reports_stopped_trials(fmnist_dir, tmp_path):
    """The default: a stopped trial is not evaluated, and says where it stopped; trials that reach
    the last epoch are evaluated (ASHA used to stop them at max_t, before their evaluation)."""
    space = tiny_space("grid-asha", trial=_trial(epochs=3, steps=4), concurrency=1, scheduler=_asha(False),
                       search={"presets": ["beta", "cmi"], "gamma": [0.3, 1.5], "seeds": [0]})
    space["trial"]["regularizer"] = {"critic_width": 16, "allow_weights_above_one": True}
    results = tmp_path / "results"
    r = cli("run", write_space(tmp_path, space), "--results", results, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    d = results / "grid-asha"
    trials = pd.read_parquet(d / "trials.parquet")
    assert len(trials) == 4
    done, stopped = trials[trials["status"] == "FINISHED"], trials[trials["status"] == "STOPPED"]
    assert len(done) >= 1 and len(stopped) >= 1 and len(done) + len(stopped) == 4, trials[["name", "status"]]
    assert done[[KL, AOLR]].notna().all().all() and (done["epochs_done"] == 3).all()
    assert stopped[KL].isna().all() and stopped["stopped_at"].isin([1, 2]).all()
    assert "not evaluated" in r.stderr and f"{len(stopped)} stopped early" in r.stdout
    for name in stopped["name"]:  # the summary table says so
        line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(name))
        assert "STOPPED" in line
    client, children = _check_mlflow(results, "grid-asha", trials)
    tags = {c.data.tags["cmisweep.trial_id"]: c.data.tags for c in children}
    for _, row in stopped.iterrows():
        assert tags[row["trial_id"]]["cmisweep.status"] == "STOPPED"
        assert tags[row["trial_id"]]["cmisweep.stopped_at"] == str(row["stopped_at"])
    report = (d / "reports" / "report.md").read_text()
    assert "## Stopped early by the scheduler" in report and "KL(z)" in report


@pytest.mark.slow(80)
def test_nsga2_sweep_killed_then_resumed(fmnist_dir, tmp_path):
    """NSGA-II on (min KL(z), max AoLR) over alpha and gamma, 2 seeds per point, its driver killed
    mid-sweep: --resume continues the same study without proposing a point twice (beyond its seed
    replicates) and without training a finished trial again; then the usual end-to-end checks."""
    space = tiny_space("nsga-kill", trial=_trial(epochs=2, steps=4), concurrency=1, algorithm=NSGA2,
                       search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 0.9},
                               "alpha": {"low": 0.0, "high": 0.9}, "seeds": [0, 1]})
    path = write_space(tmp_path, space)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "run", str(path), "--results", "results"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # kill once three trials are done and a fourth is training
        _wait_for(log, lambda t: "(3/8 trials)" in t and "epoch 1/2" in t.split("(3/8 trials)")[-1])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before = {ln.split(":")[0].split("] ")[-1] for ln in log.read_text().splitlines() if ": evaluated" in ln}
    assert len(finished_before) >= 3
    # a kill while Ray uploads its state (a non-atomic copy) leaves the files empty: make it so
    tune_dir = tmp_path / "results" / "nsga-kill" / "tune"
    for f in [*tune_dir.glob("experiment_state-*.json"), *tune_dir.glob("searcher-state-*.pkl")]:
        f.write_bytes(b"")
    r = cli("run", path, "--results", "results", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from its last complete copy" in r.stderr
    for name in finished_before:
        assert f"{name}: epoch" not in r.stderr
    results = tmp_path / "results"
    trials = pd.read_parquet(results / "nsga-kill" / "trials.parquet")
    assert len(trials) == 8 and (trials["status"] == "FINISHED").all()
    _check_study_told_seed_means(_study(results, "nsga-kill"), trials, [KL, AOLR], 4)
    client, children = _check_mlflow(results, "nsga-kill", trials)
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val/elbo")] == [1, 2]
    assert np.isfinite(trials[[KL, AOLR, "final/ihat_exact"]].to_numpy()).all()
    assert sorted(trials["seed"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    # the reports show the points the searcher tried, their objectives and the front
    d = results / "nsga-kill" / "reports"
    assert "## Points the searcher tried" in (d / "report.md").read_text() and (d / "search_points.png").is_file()
    points = pd.read_csv(d / "search_points.csv")
    assert len(points) == 4 and points["on_front"].any() and set(points["n_seeds"]) == {2}
    assert {"alpha", "gamma", KL, AOLR} <= set(points.columns)
