"""Tables laid out like the paper's Tables 4/5 (method x gamma, mean +- std over seeds) and the
paired t-test of CMI against each baseline across gamma x seeds (the paper's App. 6.1)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cmisweep.reports.frontier import KL, SCORES, finished, seed_means

TABLE_METRICS = {KL: "KL(z)", **{k: v[0] for k, v in SCORES.items()}, "final/ihat_paper": "I-hat paper",
                 "final/ihat_exact": "I-hat exact", "final/test/elbo": "ELBO", "final/eer_s": "EER(s)"}


def method_by_gamma(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows preset, columns gamma (alpha too where searched), cells 'mean +- std (n)'."""
    means = seed_means(trials, [column])
    if means.empty or column not in means:
        return pd.DataFrame()
    key = means["gamma"].map("{:g}".format)
    if means["alpha"].notna().any():
        key = key + means["alpha"].map(lambda a: "" if pd.isna(a) else f"/a{a:g}")
    cells = [f"{m:.4g} ± {s:.2g}" if n > 1 and np.isfinite(s) else f"{m:.4g}"
             for m, s, n in zip(means[column], means[f"{column}_std"], means["n_seeds"])]
    table = pd.DataFrame({"preset": means["preset"], "gamma": key, "cell": cells})
    return table.pivot(index="preset", columns="gamma", values="cell").fillna("")


def paired_tests(trials: pd.DataFrame, reference: str = "cmi") -> pd.DataFrame:
    """ttest_rel of `reference` against each other preset, pairing trials with the same gamma,
    alpha and seed; gamma = 0 is left out (there every preset is the same vanilla trial)."""
    t = finished(trials)
    if t.empty or reference not in set(t["preset"]):
        return pd.DataFrame()
    keys = ["gamma", "seed"]
    ref = t[t["preset"] == reference]
    rows = []
    for base in sorted(set(t["preset"]) - {reference, "vanilla"}):
        pair = ref.merge(t[t["preset"] == base], on=keys, suffixes=("_ref", "_base"))
        pair = pair[pair["gamma"] > 0]
        for col, label in TABLE_METRICS.items():
            a, b = f"{col}_ref", f"{col}_base"
            if a not in pair or b not in pair:
                continue
            p = pair[[a, b]].dropna()
            if len(p) < 2:
                continue
            diff = p[a] - p[b]
            if np.allclose(diff, diff.iloc[0]):
                t_stat, p_val = np.nan, np.nan  # no spread: the test is undefined
            else:
                t_stat, p_val = stats.ttest_rel(p[a], p[b])
            rows.append({"reference": reference, "baseline": base, "metric": label, "n_pairs": len(p),
                         "mean_diff": float(diff.mean()), "t": float(t_stat), "p": float(p_val)})
    return pd.DataFrame(rows)
