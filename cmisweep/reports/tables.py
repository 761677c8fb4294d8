"""Tables laid out like the paper's Tables 4/5 (method x gamma, mean +- std over seeds), the
matched-KL tables, and the descriptive (unadjusted) paired comparisons of CMI against each
baseline for every metric, in the paper's units and signs (cmisweep.vocabulary.METRICS)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cmisweep.reports import inference as inf
from cmisweep.reports.frontier import SCORES, at_matched_kl, matched_kl_interpolated, seed_means
from cmisweep.reports.pairing import comparisons, pair_values, per_seed
from cmisweep.vocabulary import METRICS, factor, is_number

UNITS_NOTE = ("Units: EER and VC-mCAS in percent (the stored fraction x 100, as the paper's Table 2); AoLR, "
              "AoSVM, mCAS and mCAS(SVM) are accuracies as fractions in [0, 1]; -ELBO (recon + KL, positive, the "
              "paper's Tables 4/5 'ELBO') and KL(z) in nats per example on test data, I-hat(z;s) in nats. "
              "Paired differences are CMI minus the baseline in these units. trials.parquet and "
              "frontier.parquet keep the stored values (fractions; the ELBO itself, negative).")
TABLE_METRICS = {c: m.label for c, m in METRICS.items() if c != "final/active_units"}


def matched_kl_table(front: pd.DataFrame, score_label: str) -> tuple[str, pd.DataFrame]:
    """at_matched_kl for a frontier score label, in the report's label and units."""
    column = next((c for c, (label, _) in SCORES.items() if label == score_label), None)
    table = at_matched_kl(front, score_label)
    if column is None:
        return score_label, table
    table = table * factor(column)
    table.index.name = "KL(z) (nats, test) <="
    return TABLE_METRICS[column], table


def interpolated_kl_table(trials: pd.DataFrame, column: str) -> tuple[str, pd.DataFrame]:
    """matched_kl_interpolated in the report's label and units: rows KL(z) levels, columns presets,
    cells 'mean +- std' over seeds."""
    m = matched_kl_interpolated(trials, column)
    if m.empty:
        return TABLE_METRICS[column], pd.DataFrame()
    f = factor(column)
    # a level whose presets rest on different seeds names each cell's seeds: they are not paired there
    same = m.groupby("kl_z")["seeds"].transform("nunique") == 1
    cells = [(f"{a * f:.4g} ± {abs(sd * f):.2g}" if np.isfinite(sd) else f"{a * f:.4g}") + ("" if ok else f" (seeds {s})")
             for a, sd, s, ok in zip(m["mean"], m["std"], m["seeds"], same)]
    table = pd.DataFrame({"KL(z) (nats, test)": m["kl_z"].round(3), "preset": m["preset"], "cell": cells})
    return TABLE_METRICS[column], table.pivot(index="KL(z) (nats, test)", columns="preset", values="cell")


def method_by_gamma(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows preset, columns gamma (alpha too where searched), cells 'mean +- std (n)'."""
    means = seed_means(trials, [column])
    if means.empty or column not in means:
        return pd.DataFrame()
    f = factor(column)  # the report's units (UNITS)
    means[column], means[f"{column}_std"] = means[column] * f, means[f"{column}_std"] * abs(f)
    key = means["gamma"].map("{:g}".format)
    if means["alpha"].notna().any():
        key = key + means["alpha"].map(lambda a: "" if pd.isna(a) else f"/a{a:g}")
    for param in (c for c in means.columns if c.startswith("params.")):  # searched settings: columns of their own
        key = key + means[param].map(lambda v, n=param[len("params."):]: "" if pd.isna(v) else f"/{n}={v:g}"
                                     if is_number(v) else f"/{n}={v}")
    cells = [f"{m:.4g} ± {s:.2g}" if n > 1 and np.isfinite(s) else f"{m:.4g}"
             for m, s, n in zip(means[column], means[f"{column}_std"], means["n_seeds"])]
    table = pd.DataFrame({"preset": means["preset"], "gamma": key, "cell": cells})
    return table.pivot(index="preset", columns="gamma", values="cell").fillna("")


def paired_tests(trials: pd.DataFrame) -> pd.DataFrame:
    """Descriptive comparisons (unadjusted, outside the family): for every metric and CMI variant
    against each baseline, the mean paired difference over trials and, with the seed as the unit,
    the per-seed mean difference, its 95% sign-flip interval and p."""
    rows = []
    for c in comparisons(trials):
        for col, lab in TABLE_METRICS.items():
            v = pair_values(c.pairs, col)
            if len(v) < 2:
                continue
            d = per_seed(v)
            lo, hi = inf.sign_flip_ci(d)
            rows.append({"comparison": c.variant, "baseline": c.baseline, "metric": lab, "n_pairs": len(v),
                         "n_seeds": len(d), "mean_diff_pairs": float(v["diff"].mean()), "estimate": float(d.mean()),
                         "ci_low": lo, "ci_high": hi, "p": inf.sign_flip_p(d),
                         "p_min": inf.smallest_p(len(d)), "adjusted": "no (descriptive)"})
    return pd.DataFrame(rows)
