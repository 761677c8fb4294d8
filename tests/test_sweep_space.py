from pathlib import Path

import pytest
import yaml

from cmisweep.errors import ConfigError
from cmisweep.sweep import search
from cmisweep.sweep.space import grid_points, load_space, point_name, trial_config
from conftest import ROOT
from helpers import tiny_space, tiny_trial

SPACES = ROOT / "search_spaces"


def write(tmp_path, data, name="space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return p


def test_shipped_spaces_are_valid_and_match_the_paper():
    fm, mn = load_space(SPACES / "fmnist.yaml"), load_space(SPACES / "mnist.yaml")
    for space, top in ((fm, 0.9), (mn, 0.7)):
        assert space.search.presets == ["beta", "advmi", "cmi"] and space.search.seeds == [0, 1, 2]
        assert space.search.gamma == pytest.approx([round(0.1 * i, 1) for i in range(int(round(top * 10)) + 1)])
        t = space.trial
        assert (t.train.epochs, t.train.batch_size, t.train.lr) == (300, 50, 1e-4)
        assert (t.critic_lr, t.regularizer.critic_steps, space.resources.gpu) == (1e-3, 2, 0.25)
        assert (t.model.layers, t.model.maps, t.model.decoder) == (13, 64, "he2019")  # Sect. 6.1
    # gamma = 0 is the same vanilla trial for every preset: it runs once per seed
    assert len(grid_points(fm)) == 3 * 9 * 3 + 3 and len(grid_points(mn)) == 3 * 7 * 3 + 3
    ag = load_space(SPACES / "fmnist-alpha-gamma.yaml")
    assert ag.algorithm.kind == "nsga2" and len(ag.algorithm.objectives) == 2
    assert search.n_trials(ag) == ag.algorithm.num_samples * len(ag.search.seeds)
    assert ag.trial.model.decoder == "he2019"
    q = load_space(SPACES / "quickstart.yaml")
    assert {p["preset"] for p in grid_points(q)} == {"beta", "cmi"}
    study = load_space(SPACES / "fmnist-cpu-study.yaml")  # results/studies: the study design
    assert study.search.presets == ["beta", "advmi", "cmi"] and study.search.seeds == [0, 1, 2]
    assert study.search.gamma == [0.0, 0.1, 0.3, 0.5, 0.7] and len(grid_points(study)) == 3 * 4 * 3 + 3
    st = study.trial
    assert st.model.decoder == "he2019" and st.train.epochs >= 10 and st.data.train_size >= 10_000


def test_points_become_trial_configs():
    space = load_space_dict(tiny_space(search={"presets": ["beta", "cmi"], "gamma": [0.0, 0.3], "seeds": [0, 1],
                                               "params": {"train.lr": [1e-3, 2e-3]}}))
    points = grid_points(space)
    names = [point_name(p) for p in points]
    assert len(points) == len(set(names)) == 2 * 2 + 2 * 2 * 2  # vanilla x lr x seed + (beta, cmi) x lr x seed
    cfg = trial_config(space, next(p for p in points if p["preset"] == "cmi" and p["params"]["train.lr"] == 2e-3))
    assert cfg.regularizer.preset == "cmi" and cfg.regularizer.knob == 0.3 and cfg.train.lr == 2e-3
    assert cfg.data.train_size == 300  # fixed settings kept


def load_space_dict(d, tmp=None):
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        return load_space(write(Path(t), d))


@pytest.mark.parametrize("change,key,expected", [
    ({"search": {"gamma": [0.3, 1.4]}}, "search.gamma", "allow_weights_above_one"),
    ({"search": {"presets": ["cmi"], "gamma": [0.2], "alpha": [0.6]},
      "trial": {"regularizer": {"m_term": "drop"}}}, "search.alpha", "not a bound"),
    ({"search": {"gamma": {"low": 0.0, "high": 0.5}}}, None, "need algorithm tpe or nsga2"),
    ({"algorithm": {"kind": "nsga2", "num_samples": 4, "objectives": [{"metric": "final/aolr", "mode": "max"}]}},
     "algorithm", "two or more objectives"),
    ({"name": "../escape"}, "name", "letters, digits"),
    ({"search": {"params": {"train.epochs": [-1]}}}, "search.params.train.epochs", "greater than or equal to 0"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu", "fraction"),
    # ASHA judges per-epoch results: not a final metric, and not a two-objective space's front
    ({"scheduler": {"metric": "final/aolr"}}, "scheduler.metric", "per-epoch"),
    ({"scheduler": {"grace_period": 1}, "search": {"gamma": {"low": 0.0, "high": 0.5}},
      "algorithm": {"kind": "nsga2", "num_samples": 4, "objectives": [
          {"metric": "final/test/kl_z", "mode": "min"}, {"metric": "final/aolr", "mode": "max"}]}},
     None, "Pareto front (a small KL(z) costs ELBO); use scheduler.kind: moasha"),
    # MO-ASHA: two or more objectives, each with a per-epoch reading
    ({"scheduler": {"kind": "moasha", "grace_period": 1}, "trial": {"train": {"epochs": 3}}}, None,
     "two or more objectives"),
    ({"scheduler": {"kind": "moasha", "grace_period": 1, "objectives": [
        {"metric": "final/test/kl_z", "mode": "min"}, {"metric": "final/mcas", "mode": "max"}]},
      "trial": {"train": {"epochs": 3}}}, None, "final/mcas has no per-epoch reading"),
    ({"scheduler": {"grace_period": 1}}, None, "no rung before the last epoch"),
    ({"search": {"gamma": {"low": 0.0, "high": 0.5}},
      "algorithm": {"kind": "tpe", "num_samples": 4, "objectives": [{"metric": "val/elbo", "mode": "max"}]}},
     "algorithm.objectives[0].metric", "final metric"),
])
def test_bad_spaces_name_the_key(tmp_path, change, key, expected):
    data = tiny_space()
    for k, v in change.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError) as e:
        load_space(write(tmp_path, data))
    assert str(e.value).startswith(str(tmp_path / "space.yaml"))
    if key:
        assert e.value.key == key
    assert expected in str(e.value)


def test_sampled_space_builds_optuna_searchers():
    space = load_space_dict(tiny_space(search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 0.5},
                                               "alpha": {"low": 0.1, "high": 0.6}, "seeds": [0, 1]},
                                       algorithm={"kind": "nsga2", "num_samples": 3, "objectives": [
                                           {"metric": "final/test/kl_z", "mode": "min"},
                                           {"metric": "final/aolr", "mode": "max"}]}))
    algo = search.search_algorithm(space)
    assert isinstance(algo, search.Replicates) and algo.repeat == 2
    assert search.num_samples(space) == 6
    assert set(search.param_space(space)) == {"point"}  # one shape of Tune config for every algorithm
    point = search.point_from_config(space, {"point": {"preset": "cmi", "gamma": 0.2, "alpha": 0.4},
                                             "__trial_index__": 1})
    assert point["seed"] == 1 and trial_config(space, point).regularizer.objective.w_m == pytest.approx(0.2)


def test_a_trial_is_resolved_once_and_its_objective_built_once(monkeypatch):
    from cmisweep import regularizer as R
    from cmisweep.trial import flat_params

    built = []
    real = R.preset
    monkeypatch.setattr(R, "preset", lambda *a, **k: built.append(a) or real(*a, **k))
    space = load_space_dict(tiny_space(search={"presets": ["beta"], "gamma": [0.3], "seeds": [0]}))
    built.clear()  # loading validates every point once
    trial = search.resolve(space, {"point": search.param_space(space)["point"]["grid_search"][0]}, "abcdef12")
    params = flat_params(trial.config)
    assert built == [("beta", 0.3, None)]  # one Regularizer for the worker, the params and the reports
    assert trial.name == "beta_g0.3_s0" and params["regularizer.knob"] == 0.3
    # J's weights have names of their own: beta's knob (the searched gamma) is J's alpha, so w_c is 0
    assert (params["objective.w_z"], params["objective.w_m"], params["objective.w_c"]) == (0.7, 0.3, 0.0)
    assert not any(k.endswith((".gamma", ".alpha")) and k.startswith("objective.") for k in params)


def test_replicates_tell_the_searcher_each_metrics_mean():
    from ray.tune.search import Searcher

    class Recorder(Searcher):  # the inner searcher: records what Replicates tells it
        def __init__(self):
            super().__init__(metric=["kl", "acc"], mode=["min", "max"])
            self.told = []

        def suggest(self, trial_id):
            return {"gamma": 0.1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told.append((trial_id, result))

    inner = Recorder()
    rep = search.Replicates(inner, repeat=3)
    configs = [rep.suggest(f"t{i}") for i in range(3)]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 2]
    rep.on_trial_complete("t0", {"kl": 1.0, "acc": 0.5})
    rep.on_trial_complete("t1", {"kl": 3.0, "acc": 0.7})
    assert inner.told == []  # not before every replicate reported
    rep.on_trial_complete("t2", None)  # a failed replicate counts as missing, not as zero
    assert inner.told == [("t0", {"kl": 2.0, "acc": pytest.approx(0.6)})]


def test_replicates_survive_save_and_restore(tmp_path):
    """What a driver killed mid-group leaves: a searcher restored from its saved state (Tune's
    Searcher.save / restore) fills the group it was filling with the same config, and tells Optuna
    the mean of replicates completed before and after the restore."""
    import optuna

    space = load_space_dict(tiny_space(search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 0.5},
                                               "seeds": [0, 1]},
                                       algorithm={"kind": "tpe", "num_samples": 2, "objectives": [
                                           {"metric": "final/aolr", "mode": "max"}]}))

    def fresh():
        algo = search.search_algorithm(space, str(tmp_path / "optuna.db"))
        algo.set_search_properties(None, None, search.param_space(space))
        return algo

    first = fresh()
    a0, a1, b0 = first.suggest("a0"), first.suggest("a1"), first.suggest("b0")
    assert (a0["__trial_index__"], a1["__trial_index__"], b0["__trial_index__"]) == (0, 1, 0)
    assert a0["point"] == a1["point"] != b0["point"]
    first.on_trial_complete("a0", {"final/aolr": 0.5})
    first.on_trial_complete("b0", {"final/aolr": 0.9})
    first.save(str(tmp_path / "searcher.pkl"))

    back = fresh()
    back.restore(str(tmp_path / "searcher.pkl"))
    b1 = back.suggest("b1")
    assert b1["__trial_index__"] == 1 and b1["point"] == b0["point"]
    back.on_trial_complete("a1", {"final/aolr": 0.7})
    back.on_trial_complete("b1", None, error=True)  # b's mean is b0's alone
    study = optuna.load_study(study_name=space.name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    told = sorted(t.value for t in study.trials if t.value is not None)
    assert told == [pytest.approx(0.6), pytest.approx(0.9)]


def test_speech_spaces_match_the_paper():
    for name in ("timit", "speech"):
        space = load_space(SPACES / f"{name}.yaml")
        t = space.trial
        assert space.search.gamma == [0.0, 0.4, 0.8, 0.9, 0.99] and space.search.presets == ["beta", "advmi", "cmi"]
        assert (t.train.epochs, t.train.lr, t.critic_lr, t.train.batch_size, t.regularizer.critic_steps) == (
            6000, 2e-4, 2e-3, 32, 2)
        e = t.evaluation  # VC-mCAS as in App. 7 of the paper
        assert (e.vc_protocol, e.vc_segments, e.vc_pairs) == ("paper", 500, 250)
        assert t.model.kind == "dsae" and (t.model.z_dim, t.model.s_dim) == (64, 64) and t.data.segment_frames == 20
        assert len(grid_points(space)) == 3 * 4 * 3 + 3
    quick = load_space(SPACES / "speech-quick.yaml")
    assert quick.trial.model.kind == "dsae" and {p["preset"] for p in grid_points(quick)} == {"beta", "cmi"}


def test_trials_parquet_names_a_sampled_trial_as_its_mlflow_run(monkeypatch):
    """collect's name of a trial is search.resolve's, the run name Tune and MLflow give it (runner,
    TrialLogger): a sampled trial's carries its id, since a sampler may suggest one point twice."""
    from types import SimpleNamespace

    import pandas as pd

    from cmisweep.sweep import collect

    space = load_space_dict(tiny_space(search={"presets": ["cmi"], "gamma": {"low": 0.0, "high": 0.5},
                                               "seeds": [0, 1]},
                                       algorithm={"kind": "tpe", "num_samples": 2, "objectives": [
                                           {"metric": "final/aolr", "mode": "max"}]}))
    config = {"point": {"preset": "cmi", "gamma": 0.25}, "__trial_index__": 1}
    trials = [SimpleNamespace(trial_id=tid, config=config, status="TERMINATED", last_result={"epoch": 1})
              for tid in ("0a1b2_00000", "0a1b2_00007")]  # the sampler's one point, twice
    epochs = pd.DataFrame({"epoch": [1], "val/elbo": [-300.0]})
    fake = SimpleNamespace(trials=trials, trial_dataframes={t.trial_id: epochs for t in trials})
    monkeypatch.setattr(collect, "_analysis", lambda exp_dir: fake)
    runs = [search.resolve(space, t.config, t.trial_id).name for t in trials]
    assert runs == ["cmi_g0.25_s1_00000", "cmi_g0.25_s1_00007"]
    assert list(collect.collect_trials("x", space).sort_values("trial_id")["name"]) == runs
    assert list(collect.collect_epochs("x", space).sort_values("trial_id")["name"]) == runs


def test_a_design_lists_a_grids_rows_each_crossed_with_presets_gammas_and_seeds():
    """search.design: explicit rows (a 2^(3-1) fraction here) instead of the full product; refused
    with a sampler, with a key also in params, and with a repeated row."""
    from cmisweep.sweep.space import SearchSpace, grid_points, trial_config

    rows = [{"regularizer.critic_steps": 2, "train.lr": 1e-3, "regularizer.critic_z": "reuse"},
            {"regularizer.critic_steps": 5, "train.lr": 1e-3, "regularizer.critic_z": "resample"},
            {"regularizer.critic_steps": 2, "train.lr": 3e-3, "regularizer.critic_z": "resample"},
            {"regularizer.critic_steps": 5, "train.lr": 3e-3, "regularizer.critic_z": "reuse"}]
    raw = {"name": "d", "trial": tiny_trial(), "search": {"presets": ["cmi"], "gamma": [0.5], "seeds": [0, 1],
                                                          "design": rows, "params": {"train.order_offset": [0]}}}
    space = SearchSpace.model_validate(raw)
    points = grid_points(space)
    assert len(points) == 8 and len({point_name(p) for p in points}) == 8
    got = {(c.regularizer.critic_steps, c.train.lr, c.regularizer.critic_z, c.seed)
           for c in (trial_config(space, p) for p in points)}
    assert got == {(r["regularizer.critic_steps"], r["train.lr"], r["regularizer.critic_z"], s) for r in rows for s in (0, 1)}
    for change, says in (({"algorithm": {"kind": "tpe", "num_samples": 2, "objectives": [{"metric": "final/aolr", "mode": "max"}]}}, "rows of a grid"),
                         ({"search": {**raw["search"], "params": {"train.lr": [1e-3]}}}, "both search.design and search.params"),
                         ({"search": {**raw["search"], "design": rows + rows[:1]}}, "two rows are the same")):
        with pytest.raises(ValueError, match=says):
            SearchSpace.model_validate({**raw, **change})


def test_a_critic_setting_multiplies_only_the_presets_that_train_critics():
    """A grid over critic settings with beta, advmi and cmi: beta trains no critic, so it runs once
    per seed with none of them in its name or config; advmi (D_m) runs per critic setting but not
    per setting of C, which it does not have; cmi (D_c) runs per value of each."""
    from cmisweep.sweep.space import SearchSpace, grid_points, trial_config

    raw = {"name": "c", "trial": tiny_trial(), "search": {
        "presets": ["beta", "advmi", "cmi"], "gamma": [0.5], "seeds": [0],
        "params": {"model.s_layer": [6, 4], "regularizer.critic_lr": [1e-2, 1e-3], "regularizer.c_form": ["paper", "exact"],
                   "regularizer.c_bound": ["none", "kl_z"]}}}
    space = SearchSpace.model_validate(raw)
    points = grid_points(space)
    by = {p: [q for q in points if q["preset"] == p] for p in ("beta", "advmi", "cmi")}
    assert len(by["beta"]) == 2 and len(by["advmi"]) == 4 and len(by["cmi"]) == 16
    assert all(set(q["params"]) == {"model.s_layer"} for q in by["beta"])
    assert all(set(q["params"]) == {"model.s_layer", "regularizer.critic_lr"} for q in by["advmi"])
    assert {trial_config(space, q).regularizer.c_bound for q in by["cmi"]} == {"none", "kl_z"}
    assert {trial_config(space, q).regularizer.critic_lr for q in by["beta"]} == {None}
    assert {trial_config(space, q).regularizer.critic_lr for q in by["cmi"]} == {1e-2, 1e-3}
