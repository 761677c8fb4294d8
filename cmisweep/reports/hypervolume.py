"""Hypervolume of each regularizer's front of KL(z) against a score, with bootstrap intervals over
seeds (docs/design.md section 5).

One number per front: the area that the front's points dominate in (minimize KL(z), optimize the
score), bounded by a reference point shared by every preset of the sweep, so a larger hypervolume
is a front that reaches better scores at lower KL(z). The reference point is the sweep's worst
KL(z) and worst score over all evaluated trials (each moved out by 5% of its range, so that the
worst points still count); it is stored beside the front in frontier.parquet. pymoo computes it.

The interval: resample the seeds with replacement (the same draw for every preset, as the seeds
pair them), recompute the seed means, the fronts and their hypervolumes; the 2.5 and 97.5
percentiles. With 3 seeds there are only 10 distinct resamples: read the interval as a spread.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV

from cmisweep.reports.frontier import KL, SCORES, finished, seed_means

MARGIN = 0.05
COLUMNS = ["preset", "score", "hypervolume", "ci_low", "ci_high", "n_seeds", "ref_kl_z", "ref_value"]


def reference_point(trials: pd.DataFrame, column: str) -> tuple[float, float]:
    """(KL(z), score) just beyond the worst of both over the sweep's evaluated trials."""
    t = finished(trials).dropna(subset=[KL, column])
    kl, score = t[KL].to_numpy(float), t[column].to_numpy(float)
    higher = SCORES[column][1]
    pad_kl = MARGIN * max(np.ptp(kl), 1e-9)
    pad_s = MARGIN * max(np.ptp(score), 1e-9)
    return float(kl.max() + pad_kl), float(score.min() - pad_s if higher else score.max() + pad_s)


def hypervolume(kl: np.ndarray, score: np.ndarray, ref: tuple[float, float], higher: bool) -> float:
    """The area dominated by the points (kl, score), bounded by ref; points beyond ref add nothing."""
    sign = -1.0 if higher else 1.0  # pymoo minimizes every objective
    f = np.column_stack([np.asarray(kl, float), sign * np.asarray(score, float)])
    r = np.array([ref[0], sign * ref[1]])
    f = f[np.isfinite(f).all(axis=1) & (f < r).all(axis=1)]
    return float(HV(ref_point=r)(f)) if len(f) else 0.0


def _per_preset(trials: pd.DataFrame, column: str, ref: tuple[float, float]) -> dict[str, float]:
    means = seed_means(trials, [KL, column]).dropna(subset=[KL, column])
    higher = SCORES[column][1]
    return {p: hypervolume(m[KL].to_numpy(), m[column].to_numpy(), ref, higher) for p, m in means.groupby("preset")}


def hypervolumes(trials: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per (preset, score) with the hypervolume, its bootstrap interval and the reference."""
    t = finished(trials)
    rows = []
    if t.empty or KL not in t:
        return pd.DataFrame(columns=COLUMNS)
    seeds = np.array(sorted(t["seed"].unique()))
    rng = np.random.default_rng(seed)
    draws = [rng.choice(seeds, size=len(seeds), replace=True) for _ in range(n_boot)]
    by_seed = {s: t[t["seed"] == s] for s in seeds}
    for column, (label, _) in SCORES.items():
        if column not in t or t[column].notna().sum() == 0:
            continue
        ref = reference_point(t, column)
        point = _per_preset(t, column, ref)
        boot: dict[str, list[float]] = {p: [] for p in point}
        by_multiset: dict[tuple, dict[str, float]] = {}  # seed means ignore order: 3 seeds, 10 resamples
        for draw in draws:
            key = tuple(sorted(draw))
            if key not in by_multiset:
                by_multiset[key] = _per_preset(pd.concat([by_seed[s] for s in key]), column, ref)
            hv = by_multiset[key]
            for p in point:
                boot[p].append(hv.get(p, 0.0))
        for p, value in point.items():
            lo, hi = np.percentile(boot[p], [2.5, 97.5])
            rows.append({"preset": p, "score": label, "hypervolume": value, "ci_low": float(lo), "ci_high": float(hi),
                         "n_seeds": len(seeds), "ref_kl_z": ref[0], "ref_value": ref[1]})
    return pd.DataFrame(rows, columns=COLUMNS)


def with_reference(front: pd.DataFrame, hv: pd.DataFrame) -> pd.DataFrame:
    """frontier.parquet's rows with the reference point of their score's hypervolume."""
    refs = hv.drop_duplicates("score").set_index("score")[["ref_kl_z", "ref_value"]]
    return front.join(refs, on="score") if len(front) else front.assign(ref_kl_z=[], ref_value=[])
