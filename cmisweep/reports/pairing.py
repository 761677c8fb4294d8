"""CMI against each baseline, trial by trial (the paper's App. 6.1: the same gamma and seed), and the
per-seed differences the tests take (docs/design.md 5.2).

Pairs are matched on the keys both presets share: gamma, seed and any searched parameter the
baseline also carries. beta and AdvMI have no alpha, so each CMI variant at a cell (an alpha, or a
parameter only CMI has) is a comparison of its own. gamma = 0 is left out: there every preset is
the same vanilla trial.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from cmisweep.reports.trials import evaluated
from cmisweep.vocabulary import KL, factor

REFERENCE = "cmi"


class Comparison(NamedTuple):
    variant: str  # "cmi", or "cmi (alpha=0.5)" where CMI ran several variants at a cell
    baseline: str
    pairs: pd.DataFrame  # one row per (gamma, seed[, shared params]): columns <col>_ref, <col>_base


def _params(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("params.") and frame[c].notna().any())


def comparisons(trials: pd.DataFrame, reference: str = REFERENCE) -> list[Comparison]:
    t = evaluated(trials)
    if t.empty or reference not in set(t["preset"]):
        return []
    ref_all = t[(t["preset"] == reference) & (t["gamma"] > 0)]
    out = []
    for base in sorted(set(t["preset"]) - {reference, "vanilla"}):
        b = t[(t["preset"] == base) & (t["gamma"] > 0)]
        shared = _params(b)
        keys = ["gamma", "seed"] + shared
        own = ["alpha"] + [c for c in _params(ref_all) if c not in shared]  # what makes a CMI variant
        variants = ref_all.assign(alpha=ref_all["alpha"].astype(float))[own].drop_duplicates()
        for _, v in variants.iterrows():
            mask = np.ones(len(ref_all), dtype=bool)
            for c in own:
                mask &= (ref_all[c].astype(float) == v[c]).to_numpy() if pd.notna(v[c]) else ref_all[c].isna().to_numpy()
            pairs = ref_all[mask].merge(b, on=keys, suffixes=("_ref", "_base"))
            if pairs.empty:
                continue
            named = [f"{c.removeprefix('params.')}={v[c]:g}" if isinstance(v[c], float) else f"{c}={v[c]}"
                     for c in own if pd.notna(v[c])]
            out.append(Comparison(reference + (f" ({', '.join(named)})" if named else ""), base, pairs))
    return out


def pair_values(pairs: pd.DataFrame, column: str, ratio: bool = False) -> pd.DataFrame:
    """Per pair: seed and the difference reference minus baseline in the report's units (or, with
    ratio, reference / baseline - 1); rows with the metric missing on either side are dropped."""
    a, b = f"{column}_ref", f"{column}_base"
    if a not in pairs or b not in pairs:
        return pd.DataFrame(columns=["seed", "gamma", "diff", "collapsed_ref", "collapsed_base"])
    p = pairs[["seed", "gamma", a, b, "collapsed_ref", "collapsed_base"]].dropna(subset=[a, b])
    f = factor(column)
    diff = p[a] / p[b] - 1.0 if ratio else (p[a] - p[b]) * f
    return pd.DataFrame({"seed": p["seed"], "gamma": p["gamma"], "diff": diff.astype(float),
                         "collapsed_ref": p["collapsed_ref"].astype(bool),
                         "collapsed_base": p["collapsed_base"].astype(bool)})


def missing(pairs: pd.DataFrame, column: str) -> int:
    """Pairs in which either trial lacks the metric (never paired with a measured value)."""
    a, b = f"{column}_ref", f"{column}_base"
    if a not in pairs or b not in pairs:
        return len(pairs)
    return int((pairs[a].isna() | pairs[b].isna()).sum())


def per_seed(values: pd.DataFrame) -> pd.Series:
    """The unit of replication: each seed's mean difference over its gammas."""
    return values.groupby("seed")["diff"].mean()


__all__ = ["Comparison", "comparisons", "pair_values", "per_seed", "missing", "KL"]
