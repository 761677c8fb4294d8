"""KL(z) against a downstream score, one colour per regularizer (the paper's Fig. 3): every trial
as a point, collapsed trials marked with a cross, and per preset and gamma the median over seeds
joined by a line, labelled by gamma. A mean with error bars would average working and collapsed
trials into a point where no trial lies; the median does not. Open circles: the Pareto front of
those medians (frontier.parquet's front, over seed means, is in report.md)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cmisweep.reports.frontier import KL, SCORES, pareto  # noqa: E402
from cmisweep.reports.trials import evaluated  # noqa: E402
from cmisweep.vocabulary import factor, label  # noqa: E402

COLORS = {"vanilla": "0.4", "beta": "tab:blue", "advmi": "tab:green", "cmi": "tab:red"}


def plot_kl_vs(trials: pd.DataFrame, column: str, path: Path) -> Path | None:
    short, higher = SCORES[column]
    t = evaluated(trials)
    if t.empty or column not in t or t[column].isna().all():
        return None
    scale = factor(column)  # the report's units, as in report.md (EER, VC-mCAS in percent)
    t = t.dropna(subset=[KL, column]).assign(y=lambda d: d[column] * scale, alpha=lambda d: d["alpha"].astype(float))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for preset, g in t.groupby("preset"):
        color = COLORS.get(preset)
        kept, lost = g[~g["collapsed"].astype(bool)], g[g["collapsed"].astype(bool)]
        ax.scatter(kept[KL], kept["y"], s=12, color=color, alpha=0.45, lw=0)
        ax.scatter(lost[KL], lost["y"], s=30, color=color, marker="x", lw=1.2)
        med = (g.groupby(["gamma", g["alpha"].fillna(-1.0)])[[KL, "y"]].median().reset_index()
               .sort_values(["gamma", "alpha"]))
        ax.plot(med[KL], med["y"], marker="o", ms=4, lw=1, color=color,
                label=f"{preset} ({len(lost)} of {len(g)} collapsed)" if len(lost) else preset)
        for _, r in med.iterrows():
            text = f"{r['gamma']:g}" if r["alpha"] < 0 else f"{r['gamma']:g}/{r['alpha']:g}"
            ax.annotate(text, (r[KL], r["y"]), textcoords="offset points", xytext=(3, 3), fontsize=7, color=color)
        on = pareto(med[KL].to_numpy(float), med["y"].to_numpy(float), higher if scale > 0 else not higher)
        ax.scatter(med[KL][on], med["y"][on], s=60, facecolors="none", edgecolors=color, lw=1.2)
    ax.set_xlabel("KL(z) (test, nats)")
    ax.set_ylabel(label(column))
    ax.set_title(f"KL(z) vs {short}: trials (x: collapsed), median per gamma (labels); circles: its front",
                 fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
