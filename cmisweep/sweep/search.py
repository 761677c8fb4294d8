"""From a search space to Ray Tune's param_space, search algorithm and scheduler.

grid:  one grid_search over explicit points (presets x gamma x alpha x params x seeds, the
       vanilla duplicates at gamma = 0 removed).
tpe:   Optuna's TPE on one objective; nsga2: Optuna's NSGA-II on two or more. Seeds replicate
       every sampled point (`Replicates`) and the sampler is told the mean over the replicates.
       The Optuna study lives in results/<name>/optuna.db (open it with optuna.load_study), so a
       researcher can read what the sampler was told, and a resumed sweep continues it.

The objectives are final metrics, present only in a trial's last result; Tune's check that every
result carries the searcher's metric is therefore off (`TUNE_DISABLE_STRICT_METRIC_CHECKING`, set
by the runner), and the space's validation checks the names instead.
"""
from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from cmisweep.config import TrialConfig
from cmisweep.sweep.space import Range, SearchSpace, grid_points, own_params, point_name, trial_config
from cmisweep.vocabulary import is_number


# the config key of a replicate's index (its seed follows from it: `point_from_config`); Ray's
# Repeater used this name, so sweeps started before cmisweep grouped its own replicates keep their seeds
TRIAL_INDEX = "__trial_index__"


class Replicates(Searcher):
    """Seed replicates of a sampled point, for one metric or several: each config the wrapped
    searcher suggests runs once per seed (config[TRIAL_INDEX] = the replicate's index), and the
    wrapped searcher is told every metric's mean over the replicates once all of them completed, as
    the result of the group's first trial (the id it suggested the config for). A group none of
    whose replicates has a number is told as an error: a failed point, not a NaN score.

    The wrapped searcher is `inner`, not `searcher`: Tune saves a wrapper that has a `searcher`
    through get_state/set_state and the base searcher separately; under another name this class is
    the base searcher, and Tune saves the whole of it (groups and wrapped searcher) through the
    public Searcher.save / restore below."""

    def __init__(self, searcher: Searcher, repeat: int = 1):
        self.inner = searcher
        self.repeat = repeat
        self.groups: dict[str, dict] = {}  # first trial id -> {"config", "members": [ids], "scores": {id: {m: v}}}
        self.group_of: dict[str, str] = {}  # trial id -> its group's first trial id
        self.current: str | None = None  # the group being filled
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config: dict, **spec) -> bool:
        # the search space comes from Tune's param_space: OptunaSearch builds its study from it
        ok = self.inner.set_search_properties(metric, mode, config, **spec)
        if ok:
            self._metric, self._mode = self.inner.metric, self.inner.mode
        return ok

    def suggest(self, trial_id: str) -> dict | None:
        group = self.groups.get(self.current) if self.current else None
        if group is None or len(group["members"]) >= self.repeat:
            config = self.inner.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = {"config": copy.deepcopy(config), "members": [], "scores": {}}
            self.groups[trial_id] = group
            self.current = trial_id
        self.group_of[trial_id] = self.current
        config = copy.deepcopy(group["config"])
        config[TRIAL_INDEX] = len(group["members"])
        group["members"].append(trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        first = self.group_of.get(trial_id)
        if first is None:  # not suggested by this searcher (nothing to tell the wrapped one)
            return
        group = self.groups[first]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        result = result or {}
        group["scores"].setdefault(trial_id, {m: _number(result.get(m)) for m in metrics})
        group.setdefault("rung", {}).setdefault(trial_id, {m: _rung_reading(result, m) for m in metrics})
        if len(group["scores"]) < self.repeat:
            return
        # the replicates' final values; where none has one (every replicate stopped unevaluated by
        # MO-ASHA), their readings at the rungs they reached (_rung_reading)
        means = {m: _mean([s[m] for s in group["scores"].values()]) for m in metrics}
        means = {m: v if np.isfinite(v) else _mean([s[m] for s in group.get("rung", {}).values()])
                 for m, v in means.items()}
        if all(np.isfinite(v) for v in means.values()):
            self.inner.on_trial_complete(first, result=means)
        else:  # every replicate failed or was stopped unevaluated: a failed point, not a NaN score
            self.inner.on_trial_complete(first, result=None, error=True)

    def save(self, checkpoint_path: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cmisweep-searcher-") as d:
            inner = Path(d) / "inner.pkl"
            self.inner.save(str(inner))
            state = {"groups": self.groups, "group_of": self.group_of, "current": self.current,
                     "inner": inner.read_bytes()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        import tempfile

        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.groups, self.group_of, self.current = state["groups"], state["group_of"], state["current"]
        with tempfile.TemporaryDirectory(prefix="cmisweep-searcher-") as d:
            inner = Path(d) / "inner.pkl"
            inner.write_bytes(state["inner"])
            self.inner.restore(str(inner))


def _rung_reading(result: dict, metric: str) -> float:
    """A trial's reading of an objective at the last epoch it reported (val/kl_z, val/aolr:
    moasha.per_epoch): what the searcher is told of a point whose every replicate MO-ASHA stopped
    unevaluated, so that it learns a dominated point rather than a failed one (docs/design.md 6.2).
    A trial that failed reports no reading."""
    from cmisweep.sweep.moasha import per_epoch

    return _number(result.get(per_epoch(metric)))


def _mean(values: list[float]) -> float:
    return float(np.nanmean(values)) if any(np.isfinite(v) for v in values) else float("nan")


def _number(v) -> float:
    return float(v) if is_number(v) else float("nan")


def _dist(v):
    if isinstance(v, Range):
        return tune.loguniform(v.low, v.high) if v.log else tune.uniform(v.low, v.high)
    if isinstance(v, list):
        return tune.choice(v) if len(v) > 1 else v[0]
    return v


def param_space(space: SearchSpace) -> dict:
    """Tune's param space, one shape for every algorithm: config["point"] is the point a trial
    runs. A grid lists its points; a searcher samples preset, gamma, alpha and params (the Optuna
    study names them point/gamma, ...) and the seed follows from the replicate's index."""
    if space.algorithm.kind == "grid":
        return {"point": tune.grid_search(grid_points(space))}
    s = space.search
    point = {"preset": _dist(s.presets), "gamma": _dist(s.gamma)}
    if s.alpha is not None:
        point["alpha"] = _dist(s.alpha)
    if s.params:
        point["params"] = {k: _dist(v) for k, v in s.params.items()}
    return {"point": point}


def point_from_config(space: SearchSpace, config: dict) -> dict:
    """The point {preset, gamma, alpha, seed, params} a trial runs, from its Tune config."""
    p = config["point"]
    seed = p["seed"] if "seed" in p else space.search.seeds[int(config.get(TRIAL_INDEX, 0)) % len(space.search.seeds)]
    gamma = float(p["gamma"]) if space.search.gamma_axis(p["preset"]) else 0.0  # a plug-in without one
    return {"preset": p["preset"], "gamma": gamma,
            "alpha": None if p.get("alpha") is None else float(p["alpha"]), "seed": seed,
            "params": own_params(p["preset"], dict(p.get("params") or {}))}


class ResolvedTrial(NamedTuple):
    """A trial resolved once from its Tune config (docs/design.md section 7)."""

    point: dict  # {preset, gamma (the paper's knob), alpha, seed, params}
    name: str  # the trial's run name; a sampled trial's carries its id (a sampler may repeat a point)
    config: TrialConfig  # what the worker trains, MLflow logs and trial.yaml records


def resolve(space: SearchSpace, config: dict, trial_id: str | None = None) -> ResolvedTrial:
    """The one function from a Tune config to a TrialConfig: the driver (names, MLflow params) and
    the worker (what it trains) both call it, each once per trial."""
    point = point_from_config(space, config)
    name = point_name(point)
    if space.algorithm.kind != "grid" and trial_id:
        name = f"{name}_{trial_id[-5:]}"
    return ResolvedTrial(point, name, trial_config(space, point))


def search_algorithm(space: SearchSpace, study_db: str | None = None) -> Searcher | None:
    """The searcher of a sampled space; its Optuna study is kept in the sqlite file `study_db`
    (in memory if None)."""
    algo = space.algorithm
    if algo.kind == "grid":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if algo.kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=algo.seed)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=algo.seed, population_size=algo.generation)
    metrics = [o.metric for o in algo.objectives]
    modes = [o.mode for o in algo.objectives]
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_db}") if study_db else None
    searcher = OptunaSearch(metric=metrics if len(metrics) > 1 else metrics[0],
                            mode=modes if len(modes) > 1 else modes[0], sampler=sampler,
                            study_name=space.name, storage=storage)
    return Replicates(searcher, repeat=len(space.search.seeds))


def num_samples(space: SearchSpace) -> int:
    """Tune's num_samples: 1 pass over the grid, or sampled points x seeds."""
    if space.algorithm.kind == "grid":
        return 1
    return space.algorithm.num_samples * len(space.search.seeds)


def scheduler(space: SearchSpace, sweep_dir: Path | None = None):
    sc = space.scheduler
    if sc is None:
        return None
    if sc.kind == "moasha":
        from cmisweep.analysis import kl_cap
        from cmisweep.sweep.moasha import MOASHA, RUNGS_FILE
        from cmisweep.vocabulary import KL, METRICS

        objectives = sc.objectives or space.algorithm.objectives
        cap = kl_cap(space.analysis, space.trial.data.dataset)  # the reports' fixed reference (docs/design.md 5.3)
        ref = [cap if o.metric == KL else float(METRICS[o.metric].chance) for o in objectives]
        return MOASHA(sweep=space.name, objectives=[(o.metric, o.mode) for o in objectives], ref=ref,
                      max_t=space.trial.train.epochs, grace_period=sc.grace_period,
                      reduction_factor=sc.reduction_factor, evaluate_stopped=sc.evaluate_stopped,
                      collapse_min_epoch=sc.collapse_min_epoch,
                      records=(sweep_dir / RUNGS_FILE) if sweep_dir is not None else None)
    from cmisweep.sweep.early_stop import EpochASHA

    return EpochASHA(metric=sc.metric, mode=sc.mode, max_t=space.trial.train.epochs, grace_period=sc.grace_period,
                     reduction_factor=sc.reduction_factor, evaluate_stopped=sc.evaluate_stopped, sweep=space.name)


def n_trials(space: SearchSpace) -> int:
    return len(grid_points(space)) if space.algorithm.kind == "grid" else num_samples(space)
