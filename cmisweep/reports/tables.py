"""Tables laid out like the paper's Tables 4/5 (method x gamma, mean +- std over seeds) and the
paired t-test of CMI against each baseline across gamma x seeds (the paper's App. 6.1, with a
Holm correction over the metrics), in the paper's units and signs (UNITS)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cmisweep.reports.frontier import KL, SCORES, at_matched_kl, finished, matched_kl_interpolated, seed_means

# The report's label and unit of each column, with the factor it multiplies the stored value by:
# the paper's units and signs (trials.parquet and frontier.parquet keep the stored values).
# EER and VC-mCAS are stored as fractions and shown in percent, as the paper's Table 2. The paper's
# "ELBO" column (Tables 4/5) is recon + KL, a positive number of nats; final/test/elbo stores the
# ELBO itself, -(recon + KL(z) + KL(s)), so the report shows it negated as -ELBO.
UNITS = {
    KL: ("KL(z) (nats, test)", 1.0),
    "final/aolr": ("AoLR (accuracy, fraction)", 1.0),
    "final/aosvm": ("AoSVM (accuracy, fraction)", 1.0),
    "final/mcas": ("mCAS (accuracy, fraction)", 1.0),
    "final/mcas_svm": ("mCAS(SVM) (accuracy, fraction)", 1.0),
    "final/eer_z": ("EER(z) [%]", 100.0),
    "final/vc_mcas": ("VC-mCAS [%]", 100.0),
    "final/vc_mcas_speaker": ("VC-mCAS(speaker) [%]", 100.0),
    "final/ihat_paper": ("I-hat(z;s) paper form (nats, test)", 1.0),
    "final/ihat_exact": ("I-hat(z;s) exact form (nats, test)", 1.0),
    # the same two forms read by an MLP critic head: the accurate estimate (README.md, "I-hat")
    "final/ihat_mlp_paper": ("I-hat(z;s) paper form, MLP critic (nats, test)", 1.0),
    "final/ihat_mlp_exact": ("I-hat(z;s) exact form, MLP critic (nats, test)", 1.0),
    "final/test/elbo": ("-ELBO (nats, test)", -1.0),
    "final/eer_s": ("EER(s) [%]", 100.0),
}
UNITS_NOTE = ("Units: EER and VC-mCAS in percent (the stored fraction x 100, as the paper's Table 2); AoLR, "
              "AoSVM, mCAS and mCAS(SVM) are accuracies as fractions in [0, 1]; -ELBO (recon + KL, positive, the "
              "paper's Tables 4/5 'ELBO') and KL(z) in nats per example on test data, I-hat(z;s) in nats. "
              "Paired t-tests: mean_diff is reference minus baseline in these units. trials.parquet and "
              "frontier.parquet keep the stored values (fractions; the ELBO itself, negative).")
TABLE_METRICS = {c: UNITS[c][0] if c in UNITS else SCORES[c][0]
                 for c in [KL, *SCORES, "final/ihat_paper", "final/ihat_exact", "final/ihat_mlp_paper",
                           "final/ihat_mlp_exact", "final/test/elbo", "final/eer_s"]}


def factor(column: str) -> float:
    """What the report multiplies a stored value of `column` by."""
    return UNITS.get(column, ("", 1.0))[1]


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
    top = m["n_seeds"].max()  # a cell from fewer seeds (the others' fronts do not reach it) says so
    cells = [(f"{a * f:.4g} ± {abs(sd * f):.2g}" if np.isfinite(sd) else f"{a * f:.4g}") + (f" ({n} seeds)" if n < top else "")
             for a, sd, n in zip(m["mean"], m["std"], m["n_seeds"])]
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
            p = pair[[a, b]].dropna() * factor(col)  # differences in the report's units and signs
            if len(p) < 2:
                continue
            diff = p[a] - p[b]
            if np.allclose(diff, diff.iloc[0]):
                t_stat, p_val, d_z = np.nan, np.nan, np.nan  # no spread: the test is undefined
            else:
                t_stat, p_val = stats.ttest_rel(p[a], p[b])
                d_z = diff.mean() / diff.std(ddof=1)
            rows.append({"reference": reference, "baseline": base, "metric": label, "n_pairs": len(p),
                         "mean_diff": float(diff.mean()), "d_z": float(d_z), "t": float(t_stat), "p": float(p_val)})
    return holm(pd.DataFrame(rows))


def holm(tests: pd.DataFrame) -> pd.DataFrame:
    """p_holm: Holm's step-down adjustment over the metrics tested against each baseline (one
    family per baseline: every metric of the table is a test of the same comparison)."""
    if tests.empty:
        return tests
    tests = tests.assign(p_holm=np.nan)
    for _, idx in tests.groupby("baseline").groups.items():
        p = tests.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            tests.loc[p[ok].index, "p_holm"] = multipletests(p[ok].to_numpy(), method="holm")[1]
    return tests
