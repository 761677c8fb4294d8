"""The evaluation as its own stage (docs/design.md section 7): a sweep that defers metrics keeps its
models, `cmisweep evaluate` fills the metrics in for exactly the trials it selects (trials.parquet,
evaluations.parquet, MLflow, the reports), reproduces what a trial recorded at its end, continues
where a killed run stopped, and refuses bad input with one line before anything runs."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import need_data
from helpers import cli, tiny_space, tiny_trial
from test_sweep_e2e import finished_sweep  # noqa: F401 - the shared small sweep, trained once

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path) -> Path:
    """beta and cmi at gamma 0.3 x seeds 0, 1, trained with I-hat and mCAS deferred."""
    need_data("fashion-mnist")
    space = tiny_space("deferred", search={"presets": ["beta", "cmi"], "gamma": [0.3], "seeds": [0, 1]})
    space["trial"]["evaluation"]["defer"] = ["ihat", "mcas"]
    space["trial"]["evaluation"]["ihat"]["converge"] = True  # the doubling rule, end to end
    path = tmp_path / "deferred.yaml"
    path.write_text(__import__("yaml").safe_dump(space))
    r = cli("run", path, "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / "results" / "deferred"


def _trials(d: Path) -> pd.DataFrame:
    return pd.read_parquet(d / "trials.parquet").set_index("name")


def _ihat_verdicts(d: Path) -> set[str]:
    """The verdicts of the I-hat claim's rows: "not evaluated" until every cell carries I-hat, then
    whatever the reading allows (no verdict for a reading off its ground truth: analysis.VERDICT_READINGS)."""
    claims = pd.read_csv(d / "reports" / "claims.csv")
    return set(claims.loc[claims["claim"] == "lower I-hat(z;s)", "verdict"])


JUDGED = {"undecidable at n = 2", "no verdict (estimator off its ground truth)"}


@pytest.mark.slow(110)
def test_deferred_metrics_evaluated_later_for_exactly_the_selected_trials_and_a_killed_run_resumes(tmp_path):
    d = _sweep(tmp_path)
    results = d.parent
    before = _trials(d)
    assert "final/ihat_paper" not in before and "final/mcas" not in before  # deferred: no trial has them
    assert before["final/aolr"].notna().all() and len(list((d / "models").glob("*.pt"))) == 4
    assert _ihat_verdicts(d) == {"not evaluated"}

    # (1) two trials, I-hat and the probes again: the new values land for those two only
    chosen, others = ["beta_g0.3_s0", "cmi_g0.3_s0"], ["beta_g0.3_s1", "cmi_g0.3_s1"]
    r = cli("evaluate", "deferred", "--metrics", "ihat,probes", "--trials", *chosen, "--results", results,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _trials(d)
    assert after.loc[chosen, "final/ihat_paper"].notna().all() and after.loc[others, "final/ihat_paper"].isna().all()
    # a kept model re-evaluated gives the AoLR its trial recorded at its end (the evaluated model is the kept one)
    assert (after.loc[chosen, "final/aolr"] - before.loc[chosen, "final/aolr"]).abs().max() <= 1e-6
    history = pd.read_parquet(d / "evaluations.parquet")
    assert set(history["name"]) == set(chosen) and set(history["metric"]) == {"ihat", "probes"}
    assert history["commit"].notna().all() and history["settings"].str.contains('"steps"').all()
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = {run.info.run_name: run for run in client.search_runs(
        [client.get_experiment_by_name("deferred").experiment_id]) if run.data.tags.get("cmisweep.role") == "trial"}
    for name in chosen:
        assert runs[name].data.metrics["final/ihat_paper"] == pytest.approx(after.loc[name, "final/ihat_paper"])
        assert runs[name].data.tags["cmisweep.evaluation.ihat"] == history.loc[history["metric"] == "ihat",
                                                                               "evaluation"].iloc[0]
    assert all("final/ihat_paper" not in runs[n].data.metrics for n in others)
    assert _ihat_verdicts(d) == {"not evaluated"}  # two trials of the claim's cells still lack I-hat
    coverage = pd.read_csv(d / "reports" / "evaluated_metrics.csv").set_index("metric")
    assert coverage.loc["ihat", "trials_with_it"] == "2/4" and coverage.loc["mcas", "trials_with_it"] == "0/4"

    # (2) the claims' cells with other I-hat settings, killed after its first trial, run again
    args = ["evaluate", "deferred", "--metrics", "ihat", "--trials", "claims", "--set", "evaluation.ihat.tolerance=0.5",
            "--results", str(results)]
    proc = subprocess.Popen([sys.executable, "-m", "cmisweep", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 180 and pd.read_parquet(d / "evaluations.parquet")["name"].size <= len(history):
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    first = pd.read_parquet(d / "evaluations.parquet").iloc[len(history):]
    assert first["name"].nunique() < 4, "the kill came after the last trial: nothing left to resume"
    r = cli("evaluate", *args[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{4 - first['name'].nunique()} trials to evaluate" in r.stderr
    new = pd.read_parquet(d / "evaluations.parquet").iloc[len(history):]
    assert not new.duplicated(["name", "column"]).any() and new["name"].nunique() == 4
    # the kill left whole trials only: the trials recorded before it carry every column the others do
    per_trial = new.groupby("name")["column"].apply(frozenset)
    assert per_trial.nunique() == 1 and len(per_trial.iloc[0]) > 4, per_trial
    pd.testing.assert_frame_equal(new.iloc[:len(first)].reset_index(drop=True), first.reset_index(drop=True))
    assert _ihat_verdicts(d) and _ihat_verdicts(d) <= JUDGED  # every cell carries I-hat now: read


def _copy_of(finished, tmp_path: Path) -> Path:
    src = finished / "results" / "e2e"
    dst = tmp_path / "e2e"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tune", "tune-state"))
    (dst / "sweep.json").unlink()  # evaluated as a committed sweep: no tracking store to touch
    return dst


def _refused(d: Path, *args) -> str:
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}
    r = cli("evaluate", d, *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()} == before  # nothing written
    assert not (d / "evaluations.parquet").exists()
    return lines[0]


def test_bad_input_to_evaluate_is_one_line_and_writes_nothing(finished_sweep, tmp_path):
    assert finished_sweep[1].returncode == 0, finished_sweep[1].stderr[-2000:]
    d = _copy_of(finished_sweep[0], tmp_path)
    assert "--metrics" in _refused(d, "--metrics", "eer")  # a speech metric on image data
    assert "--metrics" in _refused(d, "--metrics", "ihat,nonsense")
    assert "--trials" in _refused(d, "--metrics", "ihat", "--trials", "no_such_trial")
    assert "--set" in _refused(d, "--metrics", "ihat", "--set", "train.epochs=3")
    name = sorted(p.stem for p in (d / "models").glob("*.pt"))[0]
    (d / "models" / f"{name}.pt").write_bytes(b"not a model")
    assert "unreadable kept model" in _refused(d, "--metrics", "ihat", "--trials", name)
    (d / "models" / f"{name}.pt").unlink()
    assert "no kept model" in _refused(d, "--metrics", "ihat", "--trials", name)
    shutil.rmtree(d / "models")
    assert "has no kept models" in _refused(d, "--metrics", "ihat")


def test_a_kept_model_loads_back_as_the_evaluated_model(tmp_path):
    """round_to_kept rounds in place to exactly what save_kept stores; cmisweep.load reads the file."""
    import cmisweep
    from cmisweep.config import TrialConfig
    from cmisweep.kept_model import round_to_kept, save_kept
    from cmisweep.models import build_model

    cfg = TrialConfig.model_validate(tiny_trial())
    torch.manual_seed(0)
    model = round_to_kept(build_model(cfg.model, (1, 28, 28)))
    data = type("Data", (), {"train_x": torch.zeros(2, 1, 28, 28)})()
    path = save_kept(model, cfg, data, tmp_path / "m.pt")
    back, cfg_back = cmisweep.load(path)
    assert cfg_back == cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    x = (torch.rand(4, 1, 28, 28) > 0.5).float()
    assert torch.equal(model.eval().encode(x).mean, back.encode(x).mean)


@pytest.mark.parametrize("selection, judged", [("all", True), ("claims", True), ("front", False)])
def test_values_of_a_front_evaluation_never_feed_a_claim(selection, judged):
    """The same I-hat values decide a claim when an evaluation of every trial or of the claims'
    cells produced them, and never when an evaluation of the front did (selected on the outcome)."""
    from cmisweep.reports.claims import judge
    from cmisweep.reports.evaluations import HISTORY_COLUMNS, apply, for_claims

    trials = pd.DataFrame([{"name": f"{p}_s{s}", "trial_id": f"{p}{s}", "status": "FINISHED", "preset": p,
                            "gamma": 0.5, "alpha": None, "seed": s, "final/test/kl_z": 5.0 + s}
                           for p in ("beta", "cmi") for s in range(3)])
    history = pd.DataFrame([{"trial_id": r.trial_id, "name": r.name, "metric": "ihat", "column": "final/ihat_paper",
                             "value": 1.0 if r.preset == "beta" else 0.5, "evaluation": "e1", "selection": selection,
                             "settings": "{}", "commit": "c", "cpu_model": "cpu", "device": "cpu",
                             "evaluated_at": "2026-12-06T00:00:00+00:00"} for r in trials.itertuples()],
                           columns=HISTORY_COLUMNS)
    t = apply(trials, history)
    assert t["final/ihat_paper"].notna().all()  # the exploring view carries them
    claims = judge(for_claims(t, history), None, {"final/ihat_paper"})  # a sweep that deferred I-hat
    verdict = claims.loc[claims["claim"] == "lower I-hat(z;s)", "verdict"].iloc[0]
    assert (verdict != "not evaluated") == judged, verdict


def test_a_claim_pairs_values_of_one_evaluation_only():
    """I-hat measured at every trial's end, then evaluated again with other settings for CMI's trials
    alone: the claim reads "not evaluated" (it would pair new-settings CMI with old-settings beta)
    until the baseline's trials carry the same evaluation."""
    from cmisweep.reports.claims import judge
    from cmisweep.reports.evaluations import HISTORY_COLUMNS, apply, for_claims

    trials = pd.DataFrame([{"name": f"{p}_s{s}", "trial_id": f"{p}{s}", "status": "FINISHED", "preset": p,
                            "gamma": 0.5, "alpha": None, "seed": s, "final/test/kl_z": 5.0 + s,
                            "final/ihat_paper": 1.0} for p in ("beta", "cmi") for s in range(3)])

    def evaluated(presets):
        return pd.DataFrame([{"trial_id": r.trial_id, "name": r.name, "metric": "ihat", "column": "final/ihat_paper",
                              "value": 0.4, "evaluation": "steps2000", "selection": "names", "settings": "{}",
                              "commit": "c", "cpu_model": "cpu", "device": "cpu", "evaluated_at": "t"}
                             for r in trials.itertuples() if r.preset in presets], columns=HISTORY_COLUMNS)

    def verdict(history):
        claims = judge(for_claims(apply(trials, history), history))
        return claims.loc[claims["claim"] == "lower I-hat(z;s)", "verdict"].iloc[0]

    assert verdict(evaluated([])) != "not evaluated"  # all at training: one evaluation
    assert verdict(evaluated(["cmi"])) == "not evaluated"
    assert verdict(evaluated(["cmi", "beta"])) != "not evaluated"
