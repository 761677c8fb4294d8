"""What a sampled sweep (tpe / nsga2) tried: each point's alpha, gamma and searched params, its
objectives averaged over the seed replicates (what the sampler was told), and which points are on
the Pareto front of the objectives. The plot puts the points in the (gamma, alpha) plane with the
alpha = gamma diagonal (the paper's CMI) for reference, and in the plane of the objectives."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cmisweep.reports.frontier import non_dominated  # noqa: E402
from cmisweep.reports.trials import evaluated  # noqa: E402


def searched_points(trials: pd.DataFrame, space) -> pd.DataFrame:
    """One row per sampled point: preset, gamma, alpha, params.*, objective means, n_seeds, on_front."""
    objectives = space.algorithm.objectives
    if space.algorithm.kind == "grid" or trials.empty:
        return pd.DataFrame()
    keys = ["preset", "gamma", "alpha"] + sorted(c for c in trials.columns if c.startswith("params."))
    cols = [o.metric for o in objectives]
    t = evaluated(trials)
    if t.empty or not all(c in t for c in cols):
        return pd.DataFrame()
    t = t.assign(alpha=t["alpha"].astype(float))
    g = t.groupby(keys, dropna=False)
    points = g[cols].mean().join(g["seed"].nunique().rename("n_seeds")).reset_index()  # distinct seeds
    # the Pareto front of the objectives (each turned to "higher is better")
    signed = np.column_stack([points[o.metric].to_numpy() * (1 if o.mode == "max" else -1) for o in objectives])
    points["on_front"] = non_dominated(signed)
    return points.sort_values(cols[0]).reset_index(drop=True)


def plot_search(points: pd.DataFrame, space, path: Path) -> Path | None:
    if points.empty:
        return None
    objectives = space.algorithm.objectives
    two = len(objectives) >= 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(10 if two else 5, 4), squeeze=False)
    ax = axes[0][0]
    first = objectives[0]
    alpha = points["alpha"].where(points["alpha"].notna(), points["gamma"])  # alpha = gamma unless searched
    sc = ax.scatter(points["gamma"], alpha, c=points[first.metric], cmap="viridis", s=40, zorder=3)
    ax.scatter(points.loc[points["on_front"], "gamma"], alpha[points["on_front"]], s=120, facecolors="none",
               edgecolors="red", lw=1.3, zorder=4, label="on the front")
    hi = float(max(points["gamma"].max(), alpha.max(), 0.1)) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="alpha = gamma (paper's CMI)")
    ax.set_xlabel("gamma (weight of I(z;s))")
    ax.set_ylabel("alpha (weight of I(x;z))")
    fig.colorbar(sc, ax=ax, label=first.metric.removeprefix("final/"))
    ax.legend(fontsize=7)
    ax.set_title("points the searcher tried", fontsize=9)
    if two:
        ax = axes[0][1]
        x, y = objectives[0].metric, objectives[1].metric
        ax.scatter(points[x], points[y], s=30, color="0.5", label="points (seed means)")
        front = points[points["on_front"]].sort_values(x)
        ax.plot(front[x], front[y], "o-", color="red", ms=6, label="Pareto front")
        diag = points[np.isclose(alpha, points["gamma"])]
        if len(diag):
            ax.scatter(diag[x], diag[y], marker="x", color="k", s=50, label="alpha = gamma")
        ax.set_xlabel(f"{x.removeprefix('final/')} ({objectives[0].mode})")
        ax.set_ylabel(f"{y.removeprefix('final/')} ({objectives[1].mode})")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.set_title("objectives", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
