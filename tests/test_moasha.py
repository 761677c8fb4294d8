"""MO-ASHA as a Tune scheduler (cmisweep/sweep/moasha.py): rungs, replicate means, the collapse
stop, records that survive a driver restart, and what the searcher is told about a stopped point."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from cmisweep.sweep.moasha import MOASHA, per_epoch, rungs


def scheduler(tmp_path=None, **over):
    kw = dict(sweep="t", objectives=[("final/test/kl_z", "min"), ("final/aolr", "max")], ref=[50.0, 0.1], max_t=9,
              grace_period=1, reduction_factor=3.0, evaluate_stopped=False, collapse_min_epoch=None,
              records=None if tmp_path is None else tmp_path / "rungs.json")
    return MOASHA(**{**kw, **over})


def trial(tid, gamma, seed=0):
    return SimpleNamespace(trial_id=tid, config={"point": {"preset": "cmi", "gamma": gamma, "seed": seed}})


def replay_module():
    """bench/moasha_replay.py, a script, loaded as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "moasha_replay.py"
    spec = importlib.util.spec_from_file_location("moasha_replay", path)
    mr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mr)
    return mr


def result(epoch, kl, aolr):
    return {"epoch": epoch, "val/kl_z": kl, "val/aolr": aolr}


def test_rungs_and_per_epoch_readings():
    assert rungs(1, 3, 9) == [1, 3] and rungs(2, 2, 10) == [2, 4, 8]
    assert per_epoch("final/test/kl_z") == "val/kl_z" and per_epoch("final/aolr") == "val/aolr"


def test_a_dominated_trial_stops_at_a_rung_and_the_front_goes_on():
    s = scheduler()
    go = lambda t, r: s.on_trial_result(None, t, r)  # noqa: E731
    assert go(trial("a", 0.1), result(1, 5.0, 0.7)) == TrialScheduler.CONTINUE  # the first always goes on
    assert go(trial("b", 0.2), result(1, 6.0, 0.6)) == TrialScheduler.STOP  # dominated by a: 1 of 2 goes on
    assert go(trial("c", 0.3), result(1, 1.0, 0.68)) == TrialScheduler.CONTINUE  # on the front, the larger hypervolume share
    assert go(trial("a", 0.1), result(2, 5.0, 0.7)) == TrialScheduler.CONTINUE  # not a rung
    assert s.state["stopped"] == {"b": {"epoch": 1, "why": "dominated"}}
    assert go(trial("a", 0.1), result(9, 50.0, 0.0)) == TrialScheduler.CONTINUE  # the last epoch: evaluated


def test_replicates_are_ranked_by_their_points_mean():
    """Two seeds of one point: the second replicate is judged by the point's mean, so one bad
    seed of a good point does not stop it where the same reading alone would."""
    s = scheduler()
    s.on_trial_result(None, trial("a0", 0.1, 0), result(1, 2.0, 0.8))
    s.on_trial_result(None, trial("b0", 0.2, 0), result(1, 3.0, 0.7))  # dominated by a: stopped
    assert s.state["stopped"]["b0"]["why"] == "dominated"
    # a's second seed reads worse than b did, but a's mean (2.5, 0.72) still dominates b
    assert s.on_trial_result(None, trial("a1", 0.1, 1), result(1, 3.0, 0.64)) == TrialScheduler.CONTINUE


def test_a_collapse_stops_only_once_kl_stays_below_the_threshold_from_the_minimum_epoch(monkeypatch):
    """The screen's late riser (0.005, 0.006, 0.26) goes on; a trial below 0.1 nats at epoch 3
    stops as collapsed, and through the stop board (it is evaluated): the scheduler lets it run on
    to its evaluation, and the board holds the stop."""
    s = scheduler(collapse_min_epoch=3, max_t=10, reduction_factor=100.0, grace_period=5)
    for epoch, kl in ((1, 0.005), (2, 0.006), (3, 0.26)):
        assert s.decide("late", "p", result(epoch, kl, 0.2)) is None
    assert [s.decide("gone", "q", result(e, kl, 0.1)) for e, kl in ((1, 0.02), (2, 0.03), (3, 0.02))] == \
        [None, None, "collapsed"]
    judged = []
    s._board = SimpleNamespace(judge=SimpleNamespace(remote=lambda *a: judged.append(a)))
    monkeypatch.setattr("cmisweep.sweep.moasha.ray.get", lambda ref: None)
    for e, kl in ((1, 0.01), (2, 0.01)):
        assert s.on_trial_result(None, trial("g", 0.7), result(e, kl, 0.1)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, trial("g", 0.7), result(3, 0.01, 0.1)) == TrialScheduler.CONTINUE
    assert judged == [("g", 1, False), ("g", 2, False), ("g", 3, True)]
    assert s.state["stopped"]["g"] == {"epoch": 3, "why": "collapsed"}


def test_rung_records_survive_a_driver_restart(tmp_path):
    """Written after every decision and read back by a new scheduler and by one Tune unpickles
    (as Tuner.restore does, from its state at creation): the decisions continue as if uninterrupted."""
    whole = scheduler()
    cut = scheduler(tmp_path)
    pickled = pickle.dumps(cut)  # what Tune keeps: the scheduler as made, before any record
    feed = [(trial("a", 0.1), result(1, 5.0, 0.7)), (trial("b", 0.2), result(1, 4.0, 0.75)),
            (trial("c", 0.3), result(1, 6.0, 0.6)), (trial("d", 0.4), result(1, 3.0, 0.5))]
    for t, r in feed[:2]:
        whole.on_trial_result(None, t, r)
        cut.on_trial_result(None, t, r)
    restored = pickle.loads(pickled)
    assert restored.state == cut.state and (tmp_path / "rungs.json").exists()
    for t, r in feed[2:]:
        assert restored.on_trial_result(None, t, r) == whole.on_trial_result(None, t, r)
    assert restored.state == whole.state


def test_the_searcher_learns_a_stopped_points_rung_values_not_a_failure():
    """A point whose replicates MO-ASHA all stopped unevaluated is told their rung readings' mean;
    a point with one evaluated replicate is told the final values alone (a rung reading is not a
    final one); a point whose replicates all failed is still a failure."""
    from cmisweep.sweep.search import Replicates

    told = []
    inner = SimpleNamespace(metric=["final/test/kl_z", "final/aolr"], mode=["min", "max"],
                            on_trial_complete=lambda tid, result=None, error=False: told.append((tid, result, error)))
    r = Replicates.__new__(Replicates)
    r.inner, r.repeat, r.current = inner, 2, None
    r.groups = {g: {"config": {}, "members": [g, g + "1"], "scores": {}} for g in ("x", "y", "z")}
    r.group_of = {t: t[0] for g in ("x", "y", "z") for t in (g, g + "1")}
    r._metric, r._mode = inner.metric, inner.mode
    stopped = lambda kl, a: {"epoch": 1, "val/kl_z": kl, "val/aolr": a, "cmisweep/status": "STOPPED"}  # noqa: E731
    r.on_trial_complete("x", result=stopped(4.0, 0.6))
    r.on_trial_complete("x1", result=stopped(6.0, 0.5))
    r.on_trial_complete("y", result=stopped(4.0, 0.6))
    r.on_trial_complete("y1", result={**stopped(9.0, 0.1), "final/test/kl_z": 8.0, "final/aolr": 0.7})
    r.on_trial_complete("z", result={"epoch": 1, "cmisweep/status": "FAILED"})
    r.on_trial_complete("z1", result={"epoch": 1, "cmisweep/status": "FAILED"})
    assert told == [("x", {"final/test/kl_z": 5.0, "final/aolr": 0.55}, False),
                    ("y", {"final/test/kl_z": 8.0, "final/aolr": 0.7}, False), ("z", None, True)]


@pytest.mark.slow(80)
def test_nsga2_with_moasha_killed_mid_rung_then_resumed(tmp_path):
    """`cmisweep run` with NSGA-II and MO-ASHA on tiny real data, its driver SIGKILLed once two
    trials have reached the first rung, then --resume: the resumed scheduler ranks on the records
    it saved before the kill (kept, and no trial it stopped trains again); the per-epoch AoLR is
    reported, a dominated stop ends its trial unevaluated and a collapse stop is evaluated, and
    NSGA-II is told every point (none as a failure)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import optuna
    import pandas as pd
    import yaml

    from conftest import need_data
    from helpers import cli, tiny_space

    need_data("fashion-mnist")
    t = tiny_space()["trial"]
    space = tiny_space("mo", trial={**t, "train": {**t["train"], "epochs": 3, "steps_per_epoch": 4}}, concurrency=1,
                       search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 1.0}, "seeds": [0]},
                       algorithm={"kind": "nsga2", "num_samples": 4, "population_size": 2, "seed": 3,
                                  "objectives": [{"metric": "final/test/kl_z", "mode": "min"},
                                                 {"metric": "final/aolr", "mode": "max"}]},
                       scheduler={"kind": "moasha", "grace_period": 1, "reduction_factor": 2, "collapse_min_epoch": 2})
    (tmp_path / "mo.yaml").write_text(yaml.safe_dump(space))
    results = tmp_path / "results"
    d = results / "mo"

    def saved():
        try:
            return json.loads((d / "moasha_rungs.json").read_text())
        except (OSError, ValueError):
            return None

    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "run", str(tmp_path / "mo.yaml"), "--results",
                                 str(results)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:  # kill once two trials have been ranked at the first rung
        t0 = time.time()
        while not ((before := saved()) and len(before["rungs"].get("1", {})) >= 2):
            assert proc.poll() is None and time.time() - t0 < 300, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = saved()
    r = cli("run", tmp_path / "mo.yaml", "--results", results, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pd.read_parquet(d / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(d / "epochs.parquet")
    assert epochs["val/aolr"].between(0, 1).all() and epochs["time/probe_s"].gt(0).all()
    records = json.loads((d / "moasha_rungs.json").read_text())
    for epoch, rung in before["rungs"].items():  # what was ranked before the kill is still there
        for tid, entry in rung.items():
            assert records["rungs"][epoch][tid]["point"] == entry["point"], (epoch, tid)
    assert before["stopped"].items() <= records["stopped"].items()
    for tid, stop in before["stopped"].items():  # stopped before the kill: it trains no further and stays stopped
        # (a kill between the record and Tune acting on it brings the trial back from its checkpoint)
        later = [f"{trials.loc[tid, 'name']}: epoch {e}/3" for e in range(stop["epoch"] + 1, 4)]
        assert not any(line in r.stderr for line in later), tid
    assert records["stopped"] and (trials["status"] == "FINISHED").any()  # some stopped, some finished
    assert set(records["rungs"]["1"]) == set(trials.index)  # every trial reached the first rung
    assert set(records["stopped"]) == set(trials.index[trials["status"] == "STOPPED"])
    for tid, stop in records["stopped"].items():
        evaluated = pd.notna(trials.loc[tid, "final/aolr"])
        assert evaluated == (stop["why"] == "collapsed"), (tid, stop)
        assert trials.loc[tid, "stop_reason"] == stop["why"]  # the reports say why
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mo").experiment_id], "tags.`cmisweep.role` = 'trial'")
    why = {r.data.tags["cmisweep.trial_id"]: r.data.tags.get("cmisweep.stop_reason") for r in runs}
    assert why == {tid: records["stopped"].get(tid, {}).get("why") for tid in trials.index}  # and MLflow does
    report = (d / "reports" / "report.md").read_text()
    assert all(f"({s['why']})" in report for s in records["stopped"].values())
    # the offline replay (bench/moasha_replay.py) reads the same sweep's history and prices it
    replayed = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench" / "moasha_replay.py"),
                               str(d), "--grace", "1", "--eta", "2", "--collapse-min-epoch", "2", "--workers", "1",
                               "--live", str(d), "--plot", str(tmp_path / "hv.png")],  # itself as the live arm
                              capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0 and "replayed on 4 trials" in replayed.stdout, replayed.stderr[-2000:]
    assert "MO-ASHA live: " in replayed.stdout and (tmp_path / "hv.png").stat().st_size > 0
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{d / 'optuna.db'}")
    # every point told, none as a failure (a point asked just before the kill may stay RUNNING in the
    # study: the resumed searcher asks its own, as test_search_e2e's killed NSGA-II sweep shows)
    states = [tr.state for tr in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4 and optuna.trial.TrialState.FAIL not in states


def test_the_per_epoch_probe_is_on_where_moasha_ranks_on_aolr_or_the_trial_asks():
    """epoch_probe: MO-ASHA ranking on final/aolr turns the probe on; a plain sweep records it only
    with trial.evaluation.epoch_probe (the benchmark's plain NSGA-II run replays MO-ASHA on it)."""
    from cmisweep.sweep.space import MOASHA_PROBE_PER_CLASS, SearchSpace, epoch_probe, trial_config

    two = {"kind": "nsga2", "num_samples": 2, "objectives": [{"metric": "final/test/kl_z", "mode": "min"},
                                           {"metric": "final/aolr", "mode": "max"}]}
    base = {"name": "p", "search": {"presets": ["cmi"], "gamma": {"low": 0.0, "high": 1.0}},
            "algorithm": two}
    plain = SearchSpace.model_validate(base)
    mo = SearchSpace.model_validate({**base, "scheduler": {"kind": "moasha", "grace_period": 1}})
    asked = SearchSpace.model_validate({**base, "trial": {"evaluation": {"epoch_probe": 7}}})
    cfg = lambda s: trial_config(s, {"preset": "cmi", "gamma": 0.1, "seed": 0})  # noqa: E731
    assert epoch_probe(plain, cfg(plain)) is None
    assert epoch_probe(mo, cfg(mo)) == MOASHA_PROBE_PER_CLASS
    assert epoch_probe(asked, cfg(asked)) == 7


def test_the_offline_replay_stops_what_the_live_scheduler_would_and_prices_it():
    """bench/moasha_replay.py on a synthetic history, one slot, grace 1, eta 2, collapse from
    epoch 2: b is dominated by a at rung 1 (stopped, unevaluated), c's KL(z) stays below the
    threshold (stopped at epoch 2 and evaluated), a runs to the end; CPU 35 + 10 + 25 s against
    3 x 35 s, and the kept front's hypervolume is the full run's (b was dominated)."""
    import pandas as pd

    mr = replay_module()
    finals = {"a": (1.0, 0.9), "b": (2.0, 0.8), "c": (0.01, 0.2)}
    trials = pd.DataFrame([{"trial_id": tid, "name": tid, "preset": "cmi", "gamma": g, "alpha": None, "seed": 0,
                            "status": "FINISHED", "final/test/kl_z": kl, "final/aolr": ao, "final/time/eval_s": 5.0}
                           for g, (tid, (kl, ao)) in zip((0.1, 0.2, 0.3), finals.items())])
    epochs = pd.DataFrame([{"trial_id": tid, "epoch": e, "val/kl_z": kl, "val/aolr": ao, "time/epoch_s": 9.0,
                            "time/probe_s": 1.0} for tid, (kl, ao) in finals.items() for e in (1, 2, 3)])
    r = mr.replay(trials, epochs, max_t=3, grace=1, eta=2.0, collapse_min_epoch=2, ref=[50.0, 0.1],
                  workers=1).set_index("trial_id")
    assert r.loc["b", "why"] == "dominated" and r.loc["b", "stopped_at"] == 1
    assert r.loc["c", "why"] == "collapsed" and r.loc["c", "stopped_at"] == 2
    assert pd.isna(r.loc["a", "why"])
    assert r["cpu_s"].to_dict() == {"a": 35.0, "b": 10.0, "c": 25.0}
    assert r["cpu_s_full"].to_dict() == {"a": 32.0, "b": 32.0, "c": 32.0}  # no probe without MO-ASHA
    kept = trials[trials["trial_id"] != "b"]
    assert mr.front_hypervolume(kept, [50.0, 0.1]) == mr.front_hypervolume(trials, [50.0, 0.1]) > 0
    # the hypervolume against CPU: the replay's front is a's from 35 s (b ends unevaluated at 45 s),
    # a's and c's from 70 s; the plain run's (one slot: a, b, c end at 32, 64, 96 s) is all of them
    # at 96 s; on two slots a and b run together, so 64 CPU s are spent when they end at 32 s
    ref, hv = [50.0, 0.1], lambda ids: mr.front_hypervolume(trials[trials["trial_id"].isin(list(ids))], ref)
    curve = mr.hypervolume_over_cpu(trials, r, ref)
    assert curve["cpu_s"].tolist() == [0.0, 35.0, 45.0, 70.0]
    assert curve["hypervolume"].tolist() == [0.0, hv("a"), hv("a"), hv("ac")] and hv("ac") > hv("a") > 0
    unevaluated = r.assign(why=r["why"].where(r.index != "c", "dominated"))  # c ended unevaluated: not on the front
    assert mr.hypervolume_over_cpu(trials, unevaluated, ref)["hypervolume"].iloc[-1] == hv("a")
    full = r[["start_full", "end_s_full"]].rename(columns={"start_full": "start", "end_s_full": "end_s"})
    assert mr.hypervolume_over_cpu(trials, full, ref)["cpu_s"].tolist() == [0.0, 32.0, 64.0, 96.0]
    two = mr.replay(trials, epochs, max_t=3, grace=1, eta=2.0, collapse_min_epoch=2, ref=ref, workers=2)
    two = two.set_index("trial_id")[["start_full", "end_s_full"]].rename(columns={"start_full": "start", "end_s_full": "end_s"})
    assert mr.hypervolume_over_cpu(trials, two, ref)["cpu_s"].tolist() == [0.0, 64.0, 96.0]


def test_the_replay_counts_a_collapse_stop_whose_trial_kept_z_as_a_wrong_call():
    """Two trials below the collapse threshold at epochs 1 and 2, stopped as collapsed at epoch 2 (no
    rung before the end): c stays collapsed, d rises at epoch 3 and ends at 0.5 nats in its full
    run, so its stop is a wrong collapse call (the late risers of fmnist-collapse-confirm)."""
    import pandas as pd

    mr = replay_module()
    curves = {"c": (0.01, 0.01, 0.01), "d": (0.01, 0.01, 0.5)}
    trials = pd.DataFrame([{"trial_id": tid, "name": tid, "preset": "cmi", "gamma": g, "alpha": None, "seed": 0,
                            "status": "FINISHED", "final/test/kl_z": kl[-1], "final/aolr": 0.3,
                            "final/time/eval_s": 5.0} for g, (tid, kl) in zip((0.1, 0.2), curves.items())])
    epochs = pd.DataFrame([{"trial_id": tid, "epoch": e + 1, "val/kl_z": v, "val/aolr": 0.3, "time/epoch_s": 9.0,
                            "time/probe_s": 1.0} for tid, kl in curves.items() for e, v in enumerate(kl)])
    r = mr.replay(trials, epochs, max_t=3, grace=5, eta=2.0, collapse_min_epoch=2, ref=[50.0, 0.1],
                  workers=1).set_index("trial_id")
    assert list(r["why"]) == ["collapsed", "collapsed"] and list(r["stopped_at"]) == [2, 2]
    assert r["wrong_collapse"].to_dict() == {"c": False, "d": True}


def test_a_stop_recorded_before_a_driver_kill_stands_when_the_trial_comes_back(tmp_path):
    """Killed after the records said 'stopped' but before Tune stopped the trial: back from its
    checkpoint, the trial is stopped again at that epoch, though ranked among more trials it would
    now go on (red when the rung is decided again)."""
    s = scheduler(tmp_path)
    go = lambda sch, t, r: sch.on_trial_result(None, t, r)  # noqa: E731
    assert go(s, trial("a", 0.1), result(1, 5.0, 0.7)) == TrialScheduler.CONTINUE
    assert go(s, trial("b", 0.2), result(1, 6.0, 0.6)) == TrialScheduler.STOP
    back = pickle.loads(pickle.dumps(s))  # Tune's restore; the records come from the file
    assert go(back, trial("c", 0.3), result(1, 9.0, 0.1)) == TrialScheduler.STOP  # c and d rank below b
    assert go(back, trial("d", 0.4), result(1, 8.0, 0.2)) == TrialScheduler.STOP
    assert go(back, trial("b", 0.2), result(1, 6.0, 0.6)) == TrialScheduler.STOP
    assert back.state["stopped"]["b"] == {"epoch": 1, "why": "dominated"}
