"""The trials a report counts (docs/design.md 5.1): derived columns added to trials.parquet, and
the one rule for which rows are replicates.

- `collapsed`: the trial's test KL(z) is below COLLAPSE_KL (cmisweep.vocabulary). An outcome, not
  noise: a collapsed trial stays in every count and every score test.
- `repeat_of`: a trial that repeats an earlier one's searched point and seed (NSGA-II can propose
  a point twice) names that trial. It stays in trials.parquet and counts once in the reports.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cmisweep.status import EVALUATED
from cmisweep.vocabulary import COLLAPSE_KL, KL

# columns a trials.parquet of any age carries after prepare(); old ones get them empty
RECORDED = ("cpu_model", "precision", "final/active_units")


def point_columns(trials: pd.DataFrame) -> list[str]:
    """The columns that identify a searched point (without its seed)."""
    return ["preset", "gamma", "alpha"] + sorted(c for c in trials.columns if c.startswith("params."))


def point_groups(trials: pd.DataFrame):
    """The trials grouped by searched point (point_columns): the one seed grouping of the reports,
    so that two points that differ only in a searched parameter are never averaged together. A
    missing alpha or parameter is a key of its own."""
    return trials.groupby(point_columns(trials), dropna=False, sort=True)


def point_means(trials: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per searched point of the evaluated trials: the mean and std of `columns` over its seeds
    (each point and seed once: evaluated()) and `n_seeds`, the seeds it has."""
    t = evaluated(trials)
    cols = [c for c in columns if c in t.columns]
    if t.empty or not cols:
        return pd.DataFrame(columns=point_columns(trials) + ["n_seeds"])
    g = point_groups(t.assign(alpha=t["alpha"].astype(float)))
    return g[cols].mean().join(g[cols].std().add_suffix("_std")).join(g["seed"].nunique().rename("n_seeds")).reset_index()


def _key(trials: pd.DataFrame, cols: list[str]) -> pd.Series:
    return trials[cols].astype(object).where(trials[cols].notna(), None).apply(
        lambda r: repr(tuple(r)), axis=1)


def prepare(trials: pd.DataFrame) -> pd.DataFrame:
    """trials.parquet's frame with `collapsed`, `repeat_of` and the recorded columns (missing for
    sweeps older than them); the stored values are untouched."""
    t = trials.copy()
    for col in RECORDED:
        if col not in t:
            t[col] = None if col in ("cpu_model", "precision") else np.nan
    if t.empty:
        return t.assign(collapsed=pd.Series(dtype="boolean"), repeat_of=pd.Series(dtype=object))
    kl = t[KL] if KL in t else pd.Series(np.nan, index=t.index)
    evaluated = t["status"].isin([str(s) for s in EVALUATED]) & kl.notna()
    t["collapsed"] = pd.array([bool(k < COLLAPSE_KL) if e else None for k, e in zip(kl, evaluated)], dtype="boolean")
    key = _key(t, point_columns(t) + ["seed"])
    first = {}
    for i in t.index:  # the frame keeps Tune's trial order within a point: the first is the earliest
        first.setdefault(key[i], i)
    t["repeat_of"] = [None if first[key[i]] == i else t.loc[first[key[i]], "name"] for i in t.index]
    return t


def evaluated(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials the reports count: evaluated (finished, or stopped and evaluated under
    scheduler.evaluate_stopped), each point and seed once."""
    if trials.empty or "status" not in trials or KL not in trials:
        return trials.iloc[0:0]
    t = trials if "repeat_of" in trials else prepare(trials)
    return t[t["status"].isin([str(s) for s in EVALUATED]) & t[KL].notna() & t["repeat_of"].isna()]
