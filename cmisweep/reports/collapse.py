"""Collapse as an outcome (docs/design.md 5.1): how often each preset loses z, with exact
intervals, and CMI against each baseline on the same (gamma, seed) cells by McNemar's exact test
(the discordant pairs; Fisher's test would treat one seed's collapses as independent)."""
from __future__ import annotations

import pandas as pd
from scipy.stats import binomtest

from cmisweep.reports.pairing import comparisons
from cmisweep.reports.trials import evaluated, point_columns, point_groups

RATE_COLUMNS = ["preset", "gamma", "alpha", "n_trials", "n_seeds", "collapsed", "rate", "ci_low", "ci_high"]
TEST_COLUMNS = ["comparison", "baseline", "n_pairs", "only_reference", "only_baseline", "both", "rate_difference",
                "p_mcnemar"]


def rates(trials: pd.DataFrame) -> pd.DataFrame:
    """Per preset, gamma and alpha: collapsed trials out of evaluated ones, Clopper-Pearson 95%."""
    t = evaluated(trials)
    rows = []
    if t.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    keys = point_columns(t)
    for point, g in point_groups(t.assign(alpha=t["alpha"].astype(float))):
        k, n = int(g["collapsed"].sum()), len(g)
        ci = binomtest(k, n).proportion_ci(method="exact")
        rows.append({**dict(zip(keys, point)), "n_trials": n, "n_seeds": g["seed"].nunique(),
                     "collapsed": k, "rate": k / n, "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows, columns=keys + RATE_COLUMNS[3:])


def mcnemar(trials: pd.DataFrame) -> pd.DataFrame:
    """CMI against each baseline on paired cells: McNemar's exact p (two-sided binomial test of
    the discordant pairs). Descriptive unless the analysis declares it."""
    rows = []
    for c in comparisons(trials):
        a, b = c.pairs["collapsed_ref"].astype(bool), c.pairs["collapsed_base"].astype(bool)
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        rows.append({"comparison": c.variant, "baseline": c.baseline, "n_pairs": len(c.pairs), "only_reference": only_a,
                     "only_baseline": only_b, "both": int((a & b).sum()),
                     "rate_difference": (only_a - only_b) / len(c.pairs), "p_mcnemar": float(p)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
