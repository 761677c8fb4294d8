"""Pareto fronts of KL(z) against downstream scores, per regularizer (docs/design.md section 5).

Methods are compared at matched KL(z), not only at matched gamma: CMI also lowers KL(z) at a
given gamma, and at small budgets much of its effect rides on that. A point is on the front when
no other point of the same regularizer has KL(z) at most as large and a score at least as good
(better in one of the two). Points are seed means at each (preset, gamma, alpha); the vanilla
point (gamma = 0) belongs to every regularizer's curve.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import find_non_dominated

from cmisweep.reports.trials import evaluated, point_means
from cmisweep.vocabulary import KL
from cmisweep.vocabulary import SCORES as _SCORES

# downstream scores: column -> (label, higher is better)
SCORES = {c: (m.short, m.higher) for c, m in _SCORES.items()}
GROUP = ["preset", "gamma", "alpha"]


def seed_means(trials: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """trials.point_means, with the vanilla point copied into every other preset's curve."""
    t = evaluated(trials)
    presets = sorted(set(t["preset"]) - {"vanilla"}) if len(t) else []
    vanilla = t[t["preset"] == "vanilla"]
    if presets and len(vanilla):
        t = pd.concat([t[t["preset"] != "vanilla"]] + [vanilla.assign(preset=p) for p in presets])
    return point_means(t, columns)


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Mask of the rows of `values` (n points x k objectives, higher is better) that no other row
    dominates (at least as good everywhere, better somewhere); rows with a non-finite value are off.
    pymoo's non-dominated sorting (it minimizes, hence the sign)."""
    values = np.asarray(values, float)
    keep = np.zeros(len(values), dtype=bool)
    finite = np.flatnonzero(np.isfinite(values).all(axis=1))
    if len(finite):
        keep[finite[find_non_dominated(-values[finite])]] = True
    return keep


def pareto(kl: np.ndarray, score: np.ndarray, higher_better: bool) -> np.ndarray:
    """Mask of the points on the front of (minimize KL, optimize score)."""
    return non_dominated(np.column_stack([-kl, score if higher_better else -score]))


def frontier(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows: one per front point: preset, score, gamma, alpha, kl_z, value, n_seeds."""
    means = seed_means(trials, [KL, *SCORES])
    rows = []
    if KL not in means:
        return pd.DataFrame(columns=["preset", "score", "gamma", "alpha", "kl_z", "value", "n_seeds"])
    for col, (label, higher) in SCORES.items():
        if col not in means:
            continue
        for preset, m in means.groupby("preset"):
            m = m.dropna(subset=[KL, col])
            mask = pareto(m[KL].to_numpy(), m[col].to_numpy(), higher)
            for _, r in m[mask].sort_values(KL).iterrows():
                rows.append({"preset": preset, "score": label, "gamma": r["gamma"], "alpha": r["alpha"],
                             "kl_z": r[KL], "value": r[col], "n_seeds": int(r["n_seeds"])})
    return pd.DataFrame(rows, columns=["preset", "score", "gamma", "alpha", "kl_z", "value", "n_seeds"])


def at_matched_kl(front: pd.DataFrame, label: str, levels: int = 5) -> pd.DataFrame:
    """Best score each preset reaches with KL(z) <= k, at KL levels spanning the overlap of the
    presets' ranges (the front as a step function)."""
    f = front[front["score"] == label]
    if f.empty or f["preset"].nunique() < 2:
        return pd.DataFrame()
    higher = next(h for lab, h in SCORES.values() if lab == label)
    lo = f.groupby("preset")["kl_z"].min().max()
    hi = f.groupby("preset")["kl_z"].max().min()
    if not np.isfinite(lo) or not np.isfinite(hi) or hi < lo:
        return pd.DataFrame()
    ks = np.linspace(lo, hi, levels) if hi > lo else np.array([lo])
    table = {}
    for preset, p in f.groupby("preset"):
        vals = []
        for k in ks:
            ok = p[p["kl_z"] <= k + 1e-12]["value"]
            vals.append((ok.max() if higher else ok.min()) if len(ok) else np.nan)
        table[preset] = vals
    return pd.DataFrame(table, index=pd.Index(np.round(ks, 3), name="KL(z) <="))


def seed_fronts(trials: pd.DataFrame, column: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(preset, seed) -> that seed's own front of (KL(z), score), sorted by KL(z); the seed's
    vanilla trial (gamma 0) is on every preset's curve."""
    t = evaluated(trials)
    if t.empty or column not in t:
        return {}
    t = t.dropna(subset=[KL, column])
    higher = SCORES[column][1]
    vanilla = t[t["preset"] == "vanilla"]
    out = {}
    for (preset, seed), g in t[t["preset"] != "vanilla"].groupby(["preset", "seed"]):
        g = pd.concat([g, vanilla[vanilla["seed"] == seed]])
        kl, score = g[KL].to_numpy(float), g[column].to_numpy(float)
        on = pareto(kl, score, higher)
        order = np.argsort(kl[on])
        out[(preset, int(seed))] = (kl[on][order], score[on][order])
    return out


def matched_kl_interpolated(trials: pd.DataFrame, column: str, levels: int = 5) -> pd.DataFrame:
    """Each preset's score at matched KL(z): every seed's front read at common KL levels by linear
    interpolation between its points, then mean and std over the seeds whose front covers the
    level (never extrapolated). The levels span the KL range that at least two seeds of every
    preset cover (every seed, for a preset with fewer): one seed whose z collapsed, a front that
    ends at KL 0, must not shrink the comparison to a point. The presets' cells at one level may
    rest on different seeds: `seeds` names them. Rows: kl_z, preset, mean, std, n_seeds, seeds;
    empty when fewer than two presets or no common range."""
    # a front of one point (a seed that collapsed at every gamma) has nothing to interpolate
    fronts = {key: f for key, f in seed_fronts(trials, column).items() if len(f[0]) >= 2}
    cols = ["kl_z", "preset", "mean", "std", "n_seeds", "seeds"]
    presets = sorted({p for p, _ in fronts})
    if len(presets) < 2:
        return pd.DataFrame(columns=cols)
    lo, hi = -np.inf, np.inf
    for preset in presets:
        ranges = [(k.min(), k.max()) for (p, _), (k, _s) in fronts.items() if p == preset]
        need = min(2, len(ranges))
        lo = max(lo, sorted(r[0] for r in ranges)[need - 1])  # the need-th lowest start
        hi = min(hi, sorted((r[1] for r in ranges), reverse=True)[need - 1])  # the need-th highest end
    if not hi > lo:
        return pd.DataFrame(columns=cols)
    ks = np.linspace(lo, hi, levels)
    rows = []
    for preset in presets:
        curves = [(seed, k, s) for (p, seed), (k, s) in fronts.items() if p == preset]
        for k in ks:
            covering = [(seed, np.interp(k, kk, ss)) for seed, kk, ss in curves if kk.min() <= k <= kk.max()]
            vals = np.array([v for _, v in covering])
            rows.append({"kl_z": float(k), "preset": preset, "mean": float(vals.mean()),
                         "std": float(vals.std(ddof=1)) if len(vals) > 1 else np.nan, "n_seeds": len(vals),
                         "seeds": ",".join(str(seed) for seed, _ in sorted(covering))})
    return pd.DataFrame(rows, columns=cols)
