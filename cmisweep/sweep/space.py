"""Search spaces (search_spaces/*.yaml): what to sweep, how, with which resources and tracking.

    name: fmnist                  # results/<name>/ and the MLflow experiment
    trial: {...}                  # a TrialConfig: the fixed settings of every trial
    search:
      presets: [beta, advmi, cmi]
      gamma: [0.0, 0.1, 0.2]      # a list is a grid; {low, high[, log]} a range to sample
      alpha: {low: 0.0, high: 1.0}  # cmi only: alpha searched independently of gamma
      seeds: [0, 1, 2]            # replicates of every point
      params: {train.lr: [1.0e-4, 3.0e-4]}  # any other key of the trial config
      design: [{train.lr: 1.0e-4, regularizer.critic_steps: 5}, ...]  # grid: explicit rows (a fractional factorial)
      plugins: {club: "examples/club.py:Club"}  # presets that are plug-ins (docs/design.md 9)
    algorithm: {kind: grid | tpe | nsga2, num_samples: 20, objectives: [{metric: final/aolr, mode: max}]}
    scheduler: {kind: asha, metric: val/elbo, mode: max, grace_period: 2, evaluate_stopped: false}
    resources: {cpu: 1, gpu: 0.25}
    concurrency: 4
    max_failures: 1
    tracking: {uri: null}         # default: sqlite under results/
    analysis: {family: [{claim: aolr, baseline: beta}], ...}   # the claims, declared (cmisweep.analysis)

Validated on load: every grid point (and the corners of every range) is built into a TrialConfig
before anything starts, so a bad value is refused with the file and the key.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from cmisweep import configio, migrate
from cmisweep.analysis import Analysis, check_family
from cmisweep.config import C_KEYS, CRITIC_KEYS, PosInt, Strict, TrialConfig
from cmisweep.errors import ConfigError
from cmisweep.regularizer import CRITICLESS_PRESETS, PRESETS, PRESETS_WITHOUT_C

# the final objectives MO-ASHA can read per epoch (cmisweep.sweep.moasha.per_epoch): validation
# KL(z), and AoLR from the per-epoch probe on labelled validation images
PER_EPOCH_OBJECTIVES = ("final/test/kl_z", "final/aolr")
# the per-epoch AoLR probe's labelled images per class where MO-ASHA ranks on it and the trial
# sets no trial.evaluation.epoch_probe of its own
MOASHA_PROBE_PER_CLASS = 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Range(Strict):
    """A continuous range to sample (Optuna algorithms): uniform, or log-uniform with log: true."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        if not self.low < self.high:
            raise ValueError(f"range needs low < high, got low = {self.low}, high = {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


Values = Union[Annotated[list[Union[float, int, str, bool]], Field(min_length=1)], Range]


def _known_preset(name: str, info: ValidationInfo) -> str:
    """A preset is the paper's, or a plug-in's name: under search.plugins (validated before the
    presets), or an entry point of the group cmisweep.regularizers."""
    plugins = info.data.get("plugins") or {}
    if name not in PRESETS and name not in plugins and _entry_point(name) is None:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(map(repr, PRESETS))}, a name under "
                         "search.plugins, or an entry point of the group cmisweep.regularizers")
    return name


def _entry_point(name: str) -> str | None:
    from importlib.metadata import entry_points

    from cmisweep.plugins import GROUPS

    return name if any(e.name == name for e in entry_points(group=GROUPS["regularizer"])) else None


class SearchDims(Strict):
    plugins: dict[str, str] = {}  # a plug-in preset's name -> its reference (cmisweep.plugins)
    # the paper's presets, and plug-in regularizers by name (_known_preset)
    presets: Annotated[list[Annotated[str, AfterValidator(_known_preset)]], Field(min_length=1)] = ["cmi"]
    gamma: Union[Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)], Range] = [0.0]
    alpha: Union[Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)], Range, None] = None
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [0]
    params: dict[str, Values] = {}
    # a grid's explicit rows of settings (e.g. a fractional factorial), each a {key: value} of the
    # trial config crossed with the presets, gammas, seeds and params
    design: list[dict[str, Union[float, int, str, bool]]] = []

    @model_validator(mode="after")
    def _known_presets(self):
        for name in self.plugins:
            if name in PRESETS:
                raise ValueError(f"plugins.{name}: a built-in preset's name; give the plug-in a name of its own")
        for name in self.presets:
            if name not in PRESETS:
                self.gamma_axis(name)  # loads it: a reference that does not import is refused here
        return self

    def combos(self) -> list[dict]:
        """A grid's settings rows: the design's rows crossed with every combination of the params."""
        keys = list(self.params)
        combos = [dict(zip(keys, c)) for c in itertools.product(*self.params.values())]
        return [{**row, **c} for row in (self.design or [{}]) for c in combos]

    def plugin_ref(self, name: str) -> str | None:
        """The reference of a plug-in preset: its entry under plugins, else an entry point's name."""
        return self.plugins[name] if name in self.plugins else _entry_point(name)

    def gamma_axis(self, name: str) -> str | None:
        """The parameter a plug-in preset declares as its gamma axis (None: it has none, and is
        compared on fronts only); 'knob' for the paper's presets."""
        if name in PRESETS:
            return "knob"
        from cmisweep import plugins

        cls = plugins.load(self.plugin_ref(name), "regularizer")
        return getattr(cls, "gamma_param", None)

    @field_validator("design")
    @classmethod
    def _rows(cls, v: list):
        for i, row in enumerate(v):
            if not row:
                raise ValueError(f"row {i} is empty: a row sets one or more keys of the trial config")
            cls._no_reserved(row)
        keys = [tuple(sorted(r.items(), key=lambda kv: kv[0])) for r in v]
        if len(set(map(repr, keys))) != len(keys):
            raise ValueError("two rows are the same: each would run the same trials twice")
        return v

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, v: dict):
        for key in v:
            if key in ("seed", "name") or key.startswith("regularizer.preset") or key in (
                    "regularizer.knob", "regularizer.gamma", "regularizer.alpha"):
                raise ValueError(f"params.{key}: set presets, gamma, alpha and seeds with their own keys")
        return v

    @field_validator("presets", "gamma", "alpha", "seeds")
    @classmethod
    def _no_repeats(cls, v):
        if isinstance(v, list) and len(set(v)) != len(v):
            repeated = sorted({x for x in v if v.count(x) > 1}, key=str)
            raise ValueError(f"values repeat ({', '.join(map(str, repeated))}): each would run the same trials twice")
        return v

    def ranges(self) -> dict[str, Range]:
        out = {k: v for k, v in (("gamma", self.gamma), ("alpha", self.alpha)) if isinstance(v, Range)}
        out.update({f"params.{k}": v for k, v in self.params.items() if isinstance(v, Range)})
        return out


class Objective(Strict):
    metric: str
    mode: Literal["min", "max"]

    @field_validator("metric")
    @classmethod
    def _final(cls, v: str):
        if not v.startswith("final/"):
            raise ValueError(f"an objective is a final metric (final/<name>, e.g. final/aolr), got {v!r}: the "
                             "searcher is told each point's score once its trials are evaluated")
        return v


class Algorithm(Strict):
    kind: Literal["grid", "tpe", "nsga2"] = "grid"
    num_samples: PosInt | None = None  # points to sample (tpe / nsga2); each runs once per seed
    objectives: list[Objective] = []
    seed: Annotated[int, Field(ge=0)] = 0  # the sampler's seed
    # nsga2: points per generation. Default num_samples // 4 (2 to 50, Optuna's default being 50),
    # so that a small budget still runs several generations instead of one of random points
    population_size: Annotated[int, Field(ge=2)] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "grid":
            if self.num_samples is not None:
                raise ValueError("num_samples is for tpe / nsga2; a grid runs every point")
            return self
        if self.num_samples is None:
            raise ValueError(f"algorithm {self.kind} needs num_samples")
        if self.population_size is not None and self.kind != "nsga2":
            raise ValueError("population_size is for nsga2")
        want = "exactly one objective" if self.kind == "tpe" else "two or more objectives"
        if (self.kind == "tpe") != (len(self.objectives) == 1) or not self.objectives:
            raise ValueError(f"algorithm {self.kind} needs {want}, got {len(self.objectives)}")
        return self


    @property
    def generation(self) -> int:
        return self.population_size or max(2, min(50, (self.num_samples or 0) // 4))


class Scheduler(Strict):
    """ASHA (Li et al. 2020) on a per-epoch metric, with epochs as its time.

    The default metric is val/elbo, the one per-epoch score that means the same thing for every
    regularizer and weight (val/objective is J, whose scale moves with alpha and gamma).
    evaluate_stopped: a trial ASHA stops at a rung is evaluated too (status STOPPED, its final
    metrics at its best epoch so far). Off by default: early stopping exists to save compute, an
    evaluation costs about as much as the training of a reduced trial, and a stopped trial is by
    ASHA's judgement a weak one; turn it on to put the stopped points on the frontier."""

    kind: Literal["asha", "moasha"] = "asha"
    metric: str = "val/elbo"  # asha: the one per-epoch metric
    mode: Literal["min", "max"] = "max"
    grace_period: PosInt = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    evaluate_stopped: bool = False
    # moasha (MO-ASHA, cmisweep.sweep.moasha): the objectives it ranks each rung on, read per epoch
    # (default: the algorithm's); a collapse stop once val KL(z) stayed below the threshold from
    # this epoch on (null: none; at the image study's 10 epochs none: a trial rose at epoch 8, docs/design.md 6.2)
    objectives: list[Objective] = []
    collapse_min_epoch: PosInt | None = None

    @field_validator("metric")
    @classmethod
    def _per_epoch(cls, v: str):
        if not v.startswith(("val/", "train/")):
            raise ValueError(f"ASHA judges the per-epoch results: expected a val/ or train/ metric (e.g. val/elbo), "
                             f"got {v!r}")
        return v


class Resources(Strict):
    cpu: Annotated[float, Field(gt=0)] = 1.0
    gpu: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, v: float):
        if v > 1 and v != int(v):
            raise ValueError(f"gpu must be a fraction <= 1 or a whole number, got {v}")
        return v


class Tracking(Strict):
    uri: str | None = None  # default: sqlite:///<results>/mlflow.db
    experiment: str | None = None  # default: the sweep's name


class SearchSpace(Strict):
    name: str
    description: str = ""
    trial: TrialConfig = TrialConfig()
    search: SearchDims = SearchDims()
    algorithm: Algorithm = Algorithm()
    scheduler: Scheduler | None = None
    resources: Resources = Resources()
    concurrency: PosInt | None = None
    max_failures: Annotated[int, Field(ge=0)] = 1
    tracking: Tracking = Tracking()
    analysis: Analysis = Analysis()  # the claims and their tests, declared before the run (cmisweep.analysis)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str):
        if not NAME_RE.match(v) or v in (".", ".."):
            raise ValueError(
                f"name {v!r} must be letters, digits, '.', '_' or '-' (it names a directory under results/)")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.search.design and self.algorithm.kind != "grid":
            raise ValueError(f"search.design lists the rows of a grid; algorithm {self.algorithm.kind} samples points "
                             "(use algorithm: {kind: grid})")
        both = sorted({k for row in self.search.design for k in row} & set(self.search.params))
        if both:
            raise ValueError(f"search: {', '.join(both)} is set by both search.design and search.params")
        if self.algorithm.kind == "grid" and self.search.ranges():
            raise ValueError(f"search: ranges {sorted(self.search.ranges())} need algorithm tpe or nsga2 "
                             "(a grid takes lists)")
        sc = self.scheduler
        if sc is not None and sc.kind == "asha" and len(self.algorithm.objectives) > 1:
            raise ValueError("scheduler: ASHA ranks trials by one per-epoch metric, which would prune points of "
                             f"the {len(self.algorithm.objectives)}-objective Pareto front (a small KL(z) costs ELBO); "
                             "use scheduler.kind: moasha, or search one objective with tpe")
        if sc is not None and sc.kind == "moasha":
            objectives = sc.objectives or self.algorithm.objectives
            if len(objectives) < 2:
                raise ValueError("scheduler: moasha ranks on two or more objectives: set scheduler.objectives "
                                 "(or algorithm.objectives)")
            unknown = [o.metric for o in objectives if o.metric not in PER_EPOCH_OBJECTIVES]
            if unknown:
                raise ValueError(f"scheduler: moasha reads its objectives per epoch; {', '.join(unknown)} has no "
                                 f"per-epoch reading (expected some of {', '.join(PER_EPOCH_OBJECTIVES)})")
        if self.scheduler is not None and self.scheduler.grace_period >= self.trial.train.epochs:
            raise ValueError(f"scheduler.grace_period = {self.scheduler.grace_period} leaves no rung before the "
                             f"last epoch (trial.train.epochs = {self.trial.train.epochs})")
        if self.search.alpha is not None and self.search.presets != ["cmi"]:
            raise ValueError("search.alpha (independent of gamma) is for presets: [cmi] only")
        try:
            unpaired = [p for p in self.search.presets if self.search.gamma_axis(p) is None]
            check_family(self.analysis, list(self.search.presets), self.trial.data.dataset, unpaired)
        except ValueError as e:
            raise ValueError(f"analysis.{e}") from None
        return self


def point_overrides(point: dict, search: SearchDims | None = None) -> dict:
    """A point {preset, gamma, alpha, seed, params} as nested overrides of the trial config; a
    plug-in preset's reference comes from the search's plugins (or its entry point)."""
    out: dict = {"seed": point["seed"], "regularizer": {"preset": point["preset"], "knob": point["gamma"]}}
    if point["preset"] not in PRESETS:
        out["regularizer"]["plugin"] = (search or SearchDims()).plugin_ref(point["preset"])
    if point.get("alpha") is not None:
        out["regularizer"]["alpha"] = point["alpha"]
    out["name"] = point_name(point)
    for key, value in point.get("params", {}).items():
        configio.set_dotted(out, key, value)
    return out


def own_params(preset: str, params: dict) -> dict:
    """The searched params that apply to a preset: a plug-in's parameters (regularizer.params.*)
    are not the paper's presets', the critics' settings (config.CRITIC_KEYS) are nothing to a
    preset that trains no critic, and C's (config.C_KEYS) nothing to one without C (advmi): a grid
    runs those once, not once per value."""
    if preset not in PRESETS:
        return params
    ignored = CRITIC_KEYS if preset in CRITICLESS_PRESETS else C_KEYS if preset in PRESETS_WITHOUT_C else frozenset()
    return {k: v for k, v in params.items() if not k.startswith("regularizer.params.")
            and not (k.startswith("regularizer.") and k.split(".", 1)[1] in ignored)}


def plugin_refs(space: SearchSpace) -> list[str]:
    """Every plug-in reference a space's trials can load: its regularizer presets', its fixed
    regularizer's and its model's."""
    refs = [space.search.plugin_ref(p) for p in space.search.presets if p not in PRESETS]
    refs += [r for r in (space.trial.regularizer.plugin, getattr(space.trial.model, "plugin", None)) if r]
    return list(dict.fromkeys(refs))


def epoch_probe(space: SearchSpace, cfg: TrialConfig) -> int | None:
    """Labelled validation images per class of a trial's per-epoch AoLR probe (val/aolr), or None
    for no probe: the trial's own evaluation.epoch_probe, else MOASHA_PROBE_PER_CLASS where MO-ASHA
    ranks its rungs on final/aolr."""
    if cfg.evaluation.epoch_probe is not None:
        return cfg.evaluation.epoch_probe
    sc = space.scheduler
    ranks_aolr = sc is not None and sc.kind == "moasha" and "final/aolr" in [
        o.metric for o in (sc.objectives or space.algorithm.objectives)]
    return MOASHA_PROBE_PER_CLASS if ranks_aolr else None


def point_name(point: dict) -> str:
    name = f"{point['preset']}_g{point['gamma']:g}"
    if point.get("alpha") is not None:
        name += f"_a{point['alpha']:g}"
    for key, value in sorted(point.get("params", {}).items()):
        name += f"_{key.rsplit('.', 1)[-1]}{value:g}" if isinstance(value, float) else f"_{key.rsplit('.', 1)[-1]}{value}"
    return name + f"_s{point['seed']}"


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def trial_config(space: SearchSpace, point: dict) -> TrialConfig:
    """The full, validated config of one trial."""
    return TrialConfig.model_validate(merge(space.trial.model_dump(), point_overrides(point, space.search)))


def grid_points(space: SearchSpace) -> list[dict]:
    """Every point of a grid, in a stable order. At alpha = gamma = 0 every preset is the
    vanilla ELBO (no critic is trained), so those points run once, as preset vanilla."""
    s = space.search
    combos = s.combos()
    seen, out = set(), []
    alphas = s.alpha if isinstance(s.alpha, list) else [None]
    for preset, gamma, alpha, combo, seed in itertools.product(s.presets, s.gamma, alphas, combos, s.seeds):
        eff_alpha = gamma if alpha is None else alpha
        if preset not in PRESETS:  # a plug-in: gamma is its axis, or (without one) not searched
            gamma, alpha = (gamma if s.gamma_axis(preset) else 0.0), None
        elif preset == "vanilla" or (gamma == 0 and (preset != "cmi" or eff_alpha == 0)):
            preset, gamma, alpha = "vanilla", 0.0, None
        point = {"preset": preset, "gamma": float(gamma), "alpha": None if alpha is None else float(alpha),
                 "seed": seed, "params": own_params(preset, combo)}
        key = repr(sorted((k, repr(v)) for k, v in point.items()))
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def corner_points(space: SearchSpace) -> list[dict]:
    """For sampled spaces: the corners of every range with each preset, to validate before starting."""
    s = space.search

    def values(v):
        if isinstance(v, Range):
            return [v.low, v.high]
        return v if v is not None else [None]

    params = {k: values(v) for k, v in s.params.items()}
    out = []
    for preset, gamma, alpha in itertools.product(s.presets, values(s.gamma), values(s.alpha)):
        for combo in itertools.product(*params.values()) if params else [()]:
            out.append({"preset": preset, "gamma": float(gamma), "alpha": alpha, "seed": s.seeds[0],
                        "params": own_params(preset, dict(zip(params, combo)))})
    return out


def load_space(path: str | Path, overrides: list[str] | tuple = (), stored: bool = False) -> SearchSpace:
    """Load and validate a search space (with KEY=VALUE overrides), including every trial it
    implies (or the corners of its ranges). Any problem is a ConfigError naming the file and the
    key; nothing is started. stored: a sweep's own copy (--resume, report), read in today's names
    (cmisweep.migrate); a user's file is not migrated, its old names are refused."""
    raw = configio.read_yaml(path)
    raw = configio.apply_overrides(migrate.current(raw, "space") if stored else raw, list(overrides), path)
    space = configio.validate(SearchSpace, raw, path)
    points = grid_points(space) if space.algorithm.kind == "grid" else corner_points(space)
    for point in points:
        try:
            trial_config(space, point)
        except Exception as e:  # noqa: BLE001 - reworded below
            import pydantic

            if isinstance(e, pydantic.ValidationError):
                key, expected = configio.format_validation_error(e, TrialConfig)
                where = _dimension_of(key, point)
                raise ConfigError(path, where, f"{expected} (in trial {point_name(point)})") from None
            raise
    return space


def _dimension_of(key: str | None, point: dict) -> str:
    """The search-space key a failing trial key comes from."""
    if key is None:
        return "search"
    if key.startswith("regularizer") and key in ("regularizer", "regularizer.knob", "regularizer.alpha",
                                                 "regularizer.preset"):
        return "search.gamma" if point.get("alpha") is None else "search.alpha"
    for p in point.get("params", {}):
        if key == p or key.startswith(p + ".") or p.startswith(key):
            return f"search.params.{p}"
    return f"trial.{key}"

