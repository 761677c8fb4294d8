"""KL(z) against a downstream score, one curve per regularizer, points labelled by gamma (the
paper's Fig. 3); seed means with error bars, the Pareto front marked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cmisweep.reports.frontier import KL, SCORES, seed_means  # noqa: E402
from cmisweep.reports.tables import TABLE_METRICS, factor  # noqa: E402

COLORS = {"vanilla": "0.4", "beta": "tab:blue", "advmi": "tab:green", "cmi": "tab:red"}


def plot_kl_vs(trials: pd.DataFrame, front: pd.DataFrame, column: str, path: Path) -> Path | None:
    label, _ = SCORES[column]
    means = seed_means(trials, [KL, column])
    if means.empty or column not in means or means[column].isna().all():
        return None
    scale = factor(column)  # the report's units, as in report.md (EER, VC-mCAS in percent)
    means[column], means[f"{column}_std"] = means[column] * scale, means[f"{column}_std"] * abs(scale)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for preset, m in means.groupby("preset"):
        m = m.dropna(subset=[KL, column]).sort_values(["gamma", "alpha"], na_position="first")
        color = COLORS.get(preset)
        ax.errorbar(m[KL], m[column], xerr=m.get(f"{KL}_std"), yerr=m.get(f"{column}_std"), marker="o", ms=4,
                    capsize=2, lw=1, color=color, label=preset)
        for _, r in m.iterrows():
            text = f"{r['gamma']:g}" if pd.isna(r["alpha"]) else f"{r['gamma']:g}/{r['alpha']:g}"
            ax.annotate(text, (r[KL], r[column]), textcoords="offset points", xytext=(3, 3), fontsize=7, color=color)
        f = front[(front["preset"] == preset) & (front["score"] == label)]
        ax.scatter(f["kl_z"], f["value"] * scale, s=60, facecolors="none", edgecolors=color, lw=1.2)
    ax.set_xlabel("KL(z) (test, nats)")
    ax.set_ylabel(TABLE_METRICS[column])
    ax.set_title(f"KL(z) vs {label}  (labels: gamma; circles: Pareto front)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
