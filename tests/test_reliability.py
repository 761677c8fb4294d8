"""Reliability and safe defaults (the README's "Failure behaviour"): interrupted drivers, killed
workers, diverging trials, concurrent trials on sqlite, determinism, safe loading."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cmisweep import regularizer as R
from cmisweep.config import TrialConfig
from cmisweep.sweep.runner import ray_init_options
from cmisweep.trial import run_trial
from helpers import cli, tiny_space, tiny_trial
from test_sweep_e2e import _wait_for, runs_of, write_space

SLOW_TRIAL = {**tiny_space()["trial"], "train": {"epochs": 4, "batch_size": 50, "lr": 1e-3, "steps_per_epoch": 6}}


def _run_and_disturb(tmp_path, space, log_name, disturb, timeout):
    """Start `cmisweep run` in its own session, call disturb(proc) once a trial reports epoch 2,
    wait for the driver to exit; returns (exit code, its output). Nothing it started outlives it."""
    log = tmp_path / log_name
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "run", str(write_space(tmp_path, space)),
                                 "--results", "results"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for(log, lambda t: "epoch 2/4" in t)
        disturb(proc)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, log.read_text()


@pytest.mark.slow(60)
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(fmnist_dir, tmp_path):
    space = tiny_space("intr", search={"presets": ["beta", "cmi"], "gamma": [0.3], "seeds": [0]}, trial=SLOW_TRIAL)
    code, text = _run_and_disturb(tmp_path, space, "first.log", lambda proc: proc.send_signal(signal.SIGINT), 120)
    assert code == 130, text[-2000:]
    assert "interrupted: continue with `cmisweep run" in text and "--resume`" in text
    assert "Traceback" not in text
    _, parents, children = runs_of(tmp_path / "results", "intr")
    assert all(r.info.status != "RUNNING" for r in parents + children)  # closed as KILLED, none left RUNNING
    r = cli("run", tmp_path / "results" / "intr" / "space.yaml", "--results", "results", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = pd.read_parquet(tmp_path / "results" / "intr" / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "FINISHED").all()
    _, parents, children = runs_of(tmp_path / "results", "intr")
    assert len(parents) == 1 and len(children) == 2 and all(c.info.status == "FINISHED" for c in children)


def _trial_workers(session: int) -> list[int]:
    """PIDs of Ray's trial actors (process title ray::ImplicitFunc...) in the driver's session."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            sid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if sid == session and cmd.startswith("ray::ImplicitFunc"):
            pids.append(int(p.name))
    return pids


@pytest.mark.slow(30)
def test_killed_worker_is_retried_from_its_checkpoint(fmnist_dir, tmp_path):
    space = tiny_space("worker", search={"presets": ["cmi"], "gamma": [0.3], "seeds": [0]}, trial=SLOW_TRIAL,
                       max_failures=2)

    def kill_worker(proc):
        workers = _trial_workers(proc.pid)
        assert workers, "no trial worker found"
        os.kill(workers[0], signal.SIGKILL)

    code, text = _run_and_disturb(tmp_path, space, "run.log", kill_worker, 240)
    assert code == 0, text[-3000:]
    after_kill = text.split("epoch 2/4", 1)[1]
    assert "epoch 1/4" not in after_kill  # retried from its checkpoint, not from scratch
    trials = pd.read_parquet(tmp_path / "results" / "worker" / "trials.parquet")
    assert len(trials) == 1 and trials["status"].iloc[0] == "FINISHED"
    client, _, children = runs_of(tmp_path / "results", "worker")
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # the run continued, no fork
    assert children[0].data.tags.get("cmisweep.recovered") == "true"
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "val/elbo")] == [1, 2, 3, 4]


@pytest.mark.slow(60)
def test_four_concurrent_trials_on_sqlite_with_one_diverging(fmnist_dir, tmp_path):
    """4 trials at once on the default sqlite store: no metric lost, no 'database is locked'. One
    of them (lr 10) diverges: it fails with the reason, the others finish, the exit code is 3.
    Secrets in the environment never reach the logged params or tags."""
    secret = "s3cr3t-token-do-not-log"
    space = tiny_space("conc", search={"presets": ["cmi"], "gamma": [0.3], "seeds": [0, 1],
                                       "params": {"train.lr": [1e-3, 10.0]}},
                       trial={**tiny_space()["trial"], "train": {"epochs": 3, "batch_size": 50, "lr": 1e-3,
                                                                 "steps_per_epoch": 4, "check_every": 1}},
                       resources={"cpu": 0.5}, concurrency=4)
    r = cli("run", write_space(tmp_path, space), "--results", "results", cwd=tmp_path,
            env={"AWS_SECRET_ACCESS_KEY": secret, "CMISWEEP_TEST_TOKEN": secret})
    assert r.returncode == 3, r.stderr[-3000:]
    assert "database is locked" not in r.stdout + r.stderr
    trials = pd.read_parquet(tmp_path / "results" / "conc" / "trials.parquet")
    assert len(trials) == 4
    bad = trials[trials["params.train.lr"] == 10.0]
    good = trials[trials["params.train.lr"] == 1e-3]
    assert (good["status"] == "FINISHED").all() and (bad["status"] == "FAILED").all()
    assert bad["error"].str.match(r"non-finite loss at epoch 1 step \d+").all()
    assert "non-finite loss at epoch 1 step" in r.stdout  # the summary
    client, parents, children = runs_of(tmp_path / "results", "conc")
    assert len(children) == 4 and parents[0].info.status == "FAILED"
    for c in children:
        lr = float(c.data.params["train.lr"])
        if lr == 10.0:
            assert c.info.status == "FAILED" and c.data.tags["cmisweep.error"].startswith("non-finite loss at epoch 1")
        else:
            assert c.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(c.info.run_id, "val/elbo")] == [1, 2, 3]
            assert "final/aolr" in c.data.metrics
        logged = json.dumps({**c.data.params, **c.data.tags})
        assert secret not in logged and "AWS_SECRET" not in logged
        assert all(k.split(".")[0] in {"name", "seed", "data", "model", "regularizer", "train", "evaluation",
                                       "objective"} for k in c.data.params)


@pytest.mark.slow(25)
def test_same_config_and_seed_give_identical_metrics(fmnist_dir, tmp_path):
    cfg = TrialConfig.model_validate(tiny_trial(train={"epochs": 2}))
    a = run_trial(cfg, tmp_path / "a").metrics
    b = run_trial(cfg, tmp_path / "b").metrics
    drop = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
    assert drop(a) == drop(b)
    c = run_trial(cfg.model_copy(update={"seed": 1}), tmp_path / "c").metrics
    assert drop(c) != drop(a)


def test_ray_dashboard_stays_on_localhost():
    assert ray_init_options(None)["include_dashboard"] is False
    opts = ray_init_options(None, dashboard=True)
    assert opts["include_dashboard"] is True and opts["dashboard_host"] == "127.0.0.1"


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cmisweep-pwned",))


def test_checkpoints_load_weights_only(tmp_path):
    from test_training import make

    trainer = make(R.preset("cmi", 0.3))
    trainer.fit(1, checkpoint=tmp_path / "ok.pt")
    state = torch.load(tmp_path / "ok.pt", weights_only=True)
    state["history"].append({"evil": Payload()})
    torch.save(state, tmp_path / "evil.pt")
    fresh = make(R.preset("cmi", 0.3))
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        fresh.restore(tmp_path / "evil.pt")
    assert not Path("/tmp/cmisweep-pwned").exists()


def test_yaml_is_read_safely(tmp_path):
    from cmisweep.configio import read_yaml
    from cmisweep.errors import ConfigError

    p = tmp_path / "x.yaml"
    p.write_text("a: !!python/object/apply:os.system ['touch /tmp/cmisweep-yaml-pwned']\n")
    with pytest.raises(ConfigError, match="not allowed"):
        read_yaml(p)
    assert not Path("/tmp/cmisweep-yaml-pwned").exists()
