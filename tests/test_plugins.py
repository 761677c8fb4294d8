"""Plug-in regularizers (docs/design.md section 9): the interface, loading by path, import path and
entry point, bad references, resume, and the shipped CLUB example through `cmisweep run`."""
import copy
import re
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import need_data
from helpers import cli, synthetic_images, tiny_space, tiny_trial

from cmisweep import critic_training
from cmisweep import regularizer as R
from cmisweep.config import TrainConfig, TrialConfig
from cmisweep.models import build_model
from cmisweep.models.critics import build_critics
from cmisweep.regularizer_api import PaperJ
from cmisweep.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
CLUB = f"{ROOT / 'examples' / 'club.py'}:Club"
FIXTURES = ROOT / "tests" / "fixtures" / "plugins"


@pytest.mark.parametrize("name,critic_z", [("cmi", "reuse"), ("cmi", "resample"), ("advmi", "reuse")])
def test_the_papers_presets_through_the_interface_equal_the_formula_written_out(name, critic_z):
    """Three steps of the Trainer (PaperJ through the interface) against the same steps written
    out with Eq. 14 and Eq. 12 directly: the weights agree to the last bit."""
    torch.manual_seed(0)
    model = build_model(TrialConfig.model_validate(tiny_trial()).model, (1, 28, 28))
    reg = R.preset(name, 0.3)
    critics = build_critics(model.z_dim, model.critic_spec, reg.uses_m, reg.uses_c, width=16)
    x, _ = synthetic_images(150, seed=2)
    cfg = TrainConfig(batch_size=50, lr=1e-3, precision="fp32", memory_format="contiguous")
    t = Trainer(copy.deepcopy(model), PaperJ(reg, copy.deepcopy(critics)), x, x, cfg, critic_lr=1e-2,
                critic_z=critic_z, seed=5)
    vae, crit = copy.deepcopy(model).train(), copy.deepcopy(critics).train()
    opt, copt = torch.optim.Adam(vae.parameters(), lr=1e-3), torch.optim.Adam(crit.parameters(), lr=1e-2)
    for i in range(3):
        xb = x[i * 50:(i + 1) * 50]
        torch.manual_seed(100 + i)
        t.train_step(xb)
        torch.manual_seed(100 + i)
        crit.requires_grad_(False)
        bns = [m for m in crit.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.track_running_stats = False
        terms = vae.elbo_terms(xb)
        m, c = R.critic_logits(crit, terms.z, terms.s)
        for m_ in bns:
            m_.track_running_stats = True
        loss = R.objective(reg, terms.recon, terms.kl_z, terms.kl_s, m, c).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        crit.requires_grad_(True)
        z, s = terms.z.detach(), terms.s.detach()
        for _ in range(reg.critic_steps):
            if critic_z == "resample":
                z, s = _resample(vae, xb)
            critic_training.step(copt, critic_training.batch_loss(crit, z, s, reg.c_form))
    for a, b in zip([*t.model.state_dict().values(), *t.critics.state_dict().values()],
                    [*vae.state_dict().values(), *crit.state_dict().values()]):
        assert torch.equal(a, b)


@torch.no_grad()
def _resample(vae, x):
    bns = [m for m in vae.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.track_running_stats = False
    z = vae.encode(x).sample()
    s = vae.local_features(x, z)
    for m in bns:
        m.track_running_stats = True
    return z, s


def plugin_trial(plugin: str, **params) -> TrialConfig:
    raw = tiny_trial(regularizer={"plugin": plugin, "knob": 0.5, "params": params})
    raw["regularizer"] = {k: v for k, v in raw["regularizer"].items() if k not in ("preset", "critic_width")}
    raw["train"] = {**raw["train"], "epochs": 2, "precision": "fp32"}
    return TrialConfig.model_validate(raw)


def test_a_plugin_trial_resumed_from_its_checkpoint_matches_one_never_stopped(tmp_path):
    """The plug-in's own state (a generator here), its networks and optimizer travel through the
    checkpoint: stopping after epoch 1 and resuming gives the uninterrupted run's numbers."""
    need_data("fashion-mnist")
    from cmisweep.trial import build_trainer

    for ref in (f"{FIXTURES / 'plugin_regs.py'}:Noisy", CLUB):
        cfg = plugin_trial(ref)
        whole, _ = build_trainer(cfg)
        whole.fit(2)
        first, _ = build_trainer(cfg)
        first.fit(1, checkpoint=tmp_path / "c.pt")
        resumed, _ = build_trainer(cfg)
        resumed.restore(tmp_path / "c.pt")
        resumed.fit(2)
        drop = lambda h: [{k: v for k, v in e.items() if not k.startswith("time/")} for e in h]  # noqa: E731
        assert drop(resumed.history) == drop(whole.history), ref
        assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()))


def test_a_plugin_is_named_by_its_own_name_and_its_params_are_validated():
    cfg = plugin_trial(CLUB, hidden=8)
    assert cfg.regularizer.preset == "club" and cfg.regularizer.plugin_params == {"hidden": 8, "lam": 0.5}
    for params, says in (({"hidden": 0}, "params.hidden"), ({"lam": 0.1}, "gamma axis"), ({"nope": 1}, "params.nope")):
        with pytest.raises(ValueError, match=says):
            plugin_trial(CLUB, **params)


def write(tmp_path, space) -> Path:
    p = tmp_path / f"{space['name']}.yaml"
    p.write_text(yaml.safe_dump(space))
    return p


@pytest.mark.parametrize("plugins,says", [
    ({"club": "examples/nowhere.py:Club"}, "search.plugins|search: .*nowhere.py"),
    ({"club": f"{ROOT / 'examples' / 'club.py'}:Klub"}, "has no attribute 'Klub'"),
    ({"club": "no_such_package.reg:Club"}, "failed to import"),
])
def test_a_bad_plugin_reference_is_one_line_exit_2_and_nothing_written(tmp_path, plugins, says):
    space = tiny_space("bad-plugin", search={"presets": ["cmi", "club"], "gamma": [0.3], "seeds": [0],
                                             "plugins": plugins})
    r = cli("run", write(tmp_path, space), "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "bad-plugin.yaml") in lines[0], r.stderr

    assert re.search(says, lines[0]), lines[0]
    assert not (tmp_path / "results").exists()


def test_bad_plugin_params_are_one_line_naming_the_key(tmp_path):
    space = tiny_space("bad-params", search={"presets": ["club"], "gamma": [0.3], "seeds": [0],
                                             "plugins": {"club": CLUB}, "params": {"regularizer.params.hidden": [-4]}})
    r = cli("run", write(tmp_path, space), "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "params.hidden" in r.stderr and not (tmp_path / "results").exists()


@pytest.mark.slow(25)
def test_an_entry_point_plugin_installed_in_the_environment_trains(tmp_path):
    """A package that declares `club_ep = club_ep_mod:Club` in the group cmisweep.regularizers
    (a dist-info on the path, as pip would install it): `cmisweep train` finds it by that name."""
    need_data("fashion-mnist")
    site = tmp_path / "site"
    (site / "club_ep-0.1.dist-info").mkdir(parents=True)
    (site / "club_ep_mod.py").write_text((ROOT / "examples" / "club.py").read_text())
    (site / "club_ep-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: club_ep\nVersion: 0.1\n")
    (site / "club_ep-0.1.dist-info" / "entry_points.txt").write_text(
        "[cmisweep.regularizers]\nclub_ep = club_ep_mod:Club\n")
    raw = tiny_trial(name="ep")
    raw["regularizer"] = {"plugin": "club_ep", "knob": 0.2, "params": {"hidden": 8}}
    raw["evaluation"] = {"enabled": False}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    r = cli("train", tmp_path / "t.yaml", "--out", tmp_path / "out", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    stored = yaml.safe_load((tmp_path / "out" / "trial.yaml").read_text())
    assert stored["regularizer"]["plugin"] == "club_ep" and stored["regularizer"]["preset"] == "club"
    raw["regularizer"]["plugin"] = "club_nowhere"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    r = cli("train", tmp_path / "t.yaml", "--out", tmp_path / "out2", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "no entry point of that name" in r.stderr and not (tmp_path / "out2").exists()


@pytest.mark.slow(70)
def test_club_sweeps_against_cmi_end_to_end_and_a_failing_plugin_fails_alone(tmp_path):
    """`cmisweep run` on tiny real data with the shipped CLUB example and a plug-in that raises at
    its first step: CLUB's trials finish, are tracked under its name and reported; the failing
    plug-in's trial is FAILED with its reason and the others are not."""
    need_data("fashion-mnist")
    from mlflow.tracking import MlflowClient

    space = tiny_space("club-e2e", search={"presets": ["cmi", "club", "boom"], "gamma": [0.3], "seeds": [0],
                                           "plugins": {"club": CLUB, "boom": f"{FIXTURES / 'plugin_regs.py'}:Boom"}},
                       max_failures=0)
    r = cli("run", write(tmp_path, space), "--results", tmp_path / "results", cwd=tmp_path)
    d = tmp_path / "results" / "club-e2e"
    trials = pd.read_parquet(d / "trials.parquet").set_index("name")
    assert trials.loc["club_g0.3_s0", "status"] == "FINISHED" and trials.loc["cmi_g0.3_s0", "status"] == "FINISHED", \
        r.stderr[-3000:]
    assert trials.loc["boom_g0_s0", "status"] == "FAILED" and "boom: this plug-in fails" in trials.loc["boom_g0_s0", "error"]
    assert trials.loc["club_g0.3_s0", "final/aolr"] > 0 and trials.loc["club_g0.3_s0", "preset"] == "club"
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("club-e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`cmisweep.regularizer` = 'club'")
    assert [x.info.run_name for x in runs] == ["club_g0.3_s0"]
    assert runs[0].data.params["objective.lam"] == "0.3"
    assert "club_mi" in client.get_run(runs[0].info.run_id).data.metrics or \
        any(k.endswith("club_mi") for k in runs[0].data.metrics)
    report = (d / "reports" / "report.md").read_text()
    assert "club" in report and "## Plug-in regularizers outside the paired claims" in report
    front = pd.read_parquet(d / "frontier.parquet")
    assert "club" in set(front["preset"])


def test_a_plugin_outside_the_installed_packages_travels_to_the_workers(tmp_path, monkeypatch):
    """Ray's runtime_env py_modules carries a file plug-in's file, and an import path's top-level
    package when it is not installed; the paper's presets need nothing."""
    from cmisweep.sweep.runner import ray_init_options
    from cmisweep.sweep.space import SearchSpace

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    for plugins, shipped in (({"club": CLUB}, [str(ROOT / "examples" / "club.py")]),
                             ({"club": "club:Club"}, [str(ROOT / "examples" / "club.py")])):
        space = SearchSpace.model_validate({"name": "s", "search": {"presets": ["cmi", "club"], "plugins": plugins}})
        assert ray_init_options(None, space=space)["runtime_env"] == {"py_modules": shipped}
    assert "runtime_env" not in ray_init_options(None, space=SearchSpace.model_validate({"name": "s"}))


@pytest.mark.slow(30)
def test_a_plugin_model_trains_evaluates_samples_and_loads(tmp_path):
    """The shipped RowVAE (examples/row_vae.py) through `cmisweep train` on tiny real data: the
    image metrics, `cmisweep sample` and `cmisweep.load`; with its file gone, loading it says so in
    one line."""
    need_data("fashion-mnist")
    raw = tiny_trial(name="row")
    raw["model"] = {"kind": "plugin", "plugin": f"{ROOT / 'examples' / 'row_vae.py'}:RowVAE", "params": {"hidden": 32}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    r = cli("train", tmp_path / "t.yaml", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0 < metrics["aolr"] <= 1 and 0 < metrics["mcas"] <= 1 and "ihat_exact" in metrics
    assert cli("sample", tmp_path / "out", "--out", tmp_path / "g.png", cwd=tmp_path).returncode == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    code = "import cmisweep, sys; m, c = cmisweep.load(sys.argv[1]); print(type(m).__name__, c.model.kind)"
    import subprocess
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["RowVAE", "plugin"], out.stderr[-2000:]
    stored = tmp_path / "out" / "model" / "extra_files" / "trial.yaml"
    stored.write_text(stored.read_text().replace(str(ROOT / "examples"), str(tmp_path / "gone")))
    r = cli("sample", tmp_path / "out", "--out", tmp_path / "g2.png", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no importable module 'row_vae'" in r.stderr and not (tmp_path / "g2.png").exists()


def test_dry_run_prices_a_plugin_and_says_in_one_line_when_one_cannot_step(tmp_path):
    need_data("fashion-mnist")
    space = tiny_space("dry", search={"presets": ["cmi", "club"], "gamma": [0.3], "seeds": [0], "plugins": {"club": CLUB}})
    r = cli("run", write(tmp_path, space), "--results", tmp_path / "results", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "club_g0.3_s0" in r.stdout and re.search(r"club \d+\.\d+ s", r.stdout), r.stdout + r.stderr
    space["search"]["plugins"]["club"] = f"{FIXTURES / 'plugin_regs.py'}:Boom"
    r = cli("run", write(tmp_path, space), "--results", tmp_path / "results", "--dry-run", cwd=tmp_path)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "boom: this plug-in fails" in r.stderr
    assert not (tmp_path / "results").exists()


def test_a_plugins_own_parameters_are_searched_for_it_alone():
    """search.params over regularizer.params.* multiplies the plug-in's points, not CMI's, and
    every point builds a valid trial (a CMI trial given a plug-in's parameter would be refused)."""
    from cmisweep.sweep.space import SearchSpace, grid_points, trial_config

    space = SearchSpace.model_validate({"name": "s", "trial": tiny_trial(), "search": {
        "presets": ["cmi", "club"], "gamma": [0.3], "seeds": [0], "plugins": {"club": CLUB},
        "params": {"regularizer.params.hidden": [8, 16], "train.lr": [1e-3]}}})
    names = sorted(trial_config(space, p).name for p in grid_points(space))
    assert names == ["club_g0.3_hidden16_lr0.001_s0", "club_g0.3_hidden8_lr0.001_s0", "cmi_g0.3_lr0.001_s0"]
    hidden = {trial_config(space, p).regularizer.plugin_params.get("hidden") for p in grid_points(space)
              if p["preset"] == "club"}
    assert hidden == {8, 16}


def test_the_one_file_regularizer_of_examples_readme_trains(tmp_path):
    """The README's plug-in, as written there, trains a step and logs its term under its name."""
    from cmisweep.trial import build_trainer

    need_data("fashion-mnist")
    code = re.findall(r"```python\n(.*?)```", (ROOT / "examples" / "README.md").read_text(), re.S)[0]
    (tmp_path / "mine.py").write_text(code)
    raw = tiny_trial()
    raw["regularizer"] = {"plugin": f"{tmp_path / 'mine.py'}:MyPenalty", "knob": 0.5}
    cfg = TrialConfig.model_validate(raw)
    t, _ = build_trainer(cfg)
    t.fit(1)
    assert cfg.regularizer.preset == "mine" and t.history[-1]["train/penalty"] > 0


@pytest.mark.slow(40)
def test_a_killed_plugin_trial_resumes_to_the_numbers_of_one_never_killed(tmp_path):
    """`cmisweep train` of a plug-in with state of its own (a generator), SIGKILLed once it has
    written a checkpoint, then `--resume`: the final metrics equal an uninterrupted run's."""
    import json
    import signal
    import subprocess
    import time

    need_data("fashion-mnist")
    raw = tiny_trial(name="noisy")
    raw["regularizer"] = {"plugin": f"{FIXTURES / 'plugin_regs.py'}:Noisy", "knob": 0.5}
    raw["data"] = {**raw["data"], "train_size": 1500}
    raw["train"] = {**raw["train"], "epochs": 4, "steps_per_epoch": None, "precision": "fp32"}
    raw["evaluation"] = {"enabled": False}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    assert cli("train", tmp_path / "t.yaml", "--out", tmp_path / "whole", cwd=tmp_path).returncode == 0
    cmd = [sys.executable, "-m", "cmisweep", "train", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "metrics.json").exists()  # killed before its end
    r = cli("train", tmp_path / "t.yaml", "--out", tmp_path / "cut", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    read = lambda d: {k: v for k, v in json.loads((tmp_path / d / "metrics.json").read_text()).items()  # noqa: E731
                      if "time" not in k}
    assert read("cut") == read("whole")
