"""The paper's claims, judged on a sweep's paired tests (docs/design.md section 5).

Each claim is a metric and the direction CMI-VAE moves it against a baseline at the same gamma
and seed (the paper's App. 6.1 pairing):
  Table 1  lower I-hat(z;s) (the paper's critic head and form)
  Fig. 3   higher AoLR, higher mCAS
  Table 2  lower EER(z), higher EER(s)
Verdict per claim and baseline, on the Holm-adjusted p-value of the paired t-test (the family:
every metric tested against that baseline):
  reproduced      p_holm < ALPHA and the mean difference in the claimed direction
  not reproduced  p_holm < ALPHA and the difference the other way
  inconclusive    otherwise (at this budget: seeds, epochs, model size)
The effect size is the mean paired difference in the report's units and Cohen's d_z (the mean
difference over the standard deviation of the differences).
"""
from __future__ import annotations

import pandas as pd

from cmisweep.reports.tables import TABLE_METRICS

ALPHA = 0.05
# (source in the paper, claim, stored column, sign of CMI minus baseline that the paper reports)
CLAIMS = [
    ("Table 1", "lower I-hat(z;s)", "final/ihat_paper", -1),
    ("Fig. 3", "higher AoLR at the same gamma", "final/aolr", +1),
    ("Fig. 3", "higher mCAS at the same gamma", "final/mcas", +1),
    ("Table 2", "lower EER(z)", "final/eer_z", -1),
    ("Table 2", "higher EER(s)", "final/eer_s", +1),
]
COLUMNS = ["source", "claim", "baseline", "verdict", "mean_diff", "d_z", "p", "p_holm", "n_pairs"]


def verdict(mean_diff: float, p_holm: float, sign: int) -> str:
    if not p_holm < ALPHA:  # NaN (no spread, too few pairs) is inconclusive too
        return "inconclusive"
    return "reproduced" if mean_diff * sign > 0 else "not reproduced"


def judge(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per claim the sweep measured and baseline it ran, from paired_tests' frame."""
    rows = []
    if tests.empty:
        return pd.DataFrame(columns=COLUMNS)
    for source, claim, column, sign in CLAIMS:
        for _, t in tests[tests["metric"] == TABLE_METRICS[column]].iterrows():
            rows.append({"source": source, "claim": claim, "baseline": t["baseline"],
                         "verdict": verdict(t["mean_diff"], t["p_holm"], sign), "mean_diff": t["mean_diff"],
                         "d_z": t["d_z"], "p": t["p"], "p_holm": t["p_holm"], "n_pairs": t["n_pairs"]})
    return pd.DataFrame(rows, columns=COLUMNS)
