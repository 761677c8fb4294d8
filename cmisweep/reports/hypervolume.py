"""Hypervolume of each regularizer's front of KL(z) against a score (docs/design.md 5.3).

One number per front: the area that the front's points dominate in (minimize KL(z), optimize the
score), bounded by a reference point fixed before the data: KL(z) at the analysis' cap
(analysis.kl_cap, by default per modality) and the score at its task's chance level
(cmisweep.vocabulary.METRICS: 0.1 for ten classes, 50% EER), so chance-level points add nothing and
the ranking cannot move with the data's range. It is stored beside the front in frontier.parquet.
Because the ranking may still depend on where the reference sits, `robustness` ranks the presets
over a grid of reference points. pymoo computes the areas.

The interval: resample the seeds with replacement (the same draw for every preset, as the seeds
pair them), recompute the seed means, the fronts and their hypervolumes; the 2.5 and 97.5
percentiles, given only where the seeds allow at least MIN_RESAMPLES distinct resamples
(C(2n-1, n): 10 with 3 seeds, 126 with 5); `resamples` says how many there are.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV

from cmisweep.reports.frontier import KL, SCORES, seed_means
from cmisweep.reports.trials import evaluated
from cmisweep.vocabulary import METRICS

MIN_RESAMPLES = 100
COLUMNS = ["preset", "score", "hypervolume", "ci_low", "ci_high", "n_seeds", "resamples", "ref_kl_z", "ref_value"]
# the robustness grid: the KL cap times these, and the score's reference moved from chance toward
# the perfect score by these shares of the way
KL_FACTORS = (0.5, 1.0, 2.0)
SCORE_SHARES = (0.0, 0.15, 0.3, 0.5)


def reference_point(column: str, kl_cap: float) -> tuple[float, float]:
    """(KL(z) cap, the score at chance): fixed by the analysis and the task, never by the data."""
    return float(kl_cap), float(METRICS[column].chance)


def distinct_resamples(n: int) -> int:
    """Multisets of n seeds drawn from n with replacement: what a seed bootstrap can tell apart."""
    return math.comb(2 * n - 1, n) if n > 0 else 0


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


def hypervolumes(trials: pd.DataFrame, kl_cap: float, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per (preset, score) with the hypervolume, its bootstrap interval and the reference."""
    t = evaluated(trials)
    rows = []
    if t.empty or KL not in t:
        return pd.DataFrame(columns=COLUMNS)
    seeds = np.array(sorted(t["seed"].unique()))
    rng = np.random.default_rng(seed)
    draws = [rng.choice(seeds, size=len(seeds), replace=True) for _ in range(n_boot)]
    by_seed = {s: t[t["seed"] == s] for s in seeds}
    for column, (label, _) in SCORES.items():
        if column not in t or t[column].notna().sum() == 0 or METRICS[column].chance is None:
            continue
        ref = reference_point(column, kl_cap)
        point = _per_preset(t, column, ref)
        boot: dict[str, list[float]] = {p: [] for p in point}
        by_multiset: dict[tuple, dict[str, float]] = {}  # seed means ignore order
        for draw in draws:
            key = tuple(sorted(draw))
            if key not in by_multiset:
                by_multiset[key] = _per_preset(pd.concat([by_seed[s] for s in key]), column, ref)
            hv = by_multiset[key]
            for p in point:
                boot[p].append(hv.get(p, 0.0))
        enough = distinct_resamples(len(seeds)) >= MIN_RESAMPLES
        for p, value in point.items():
            lo, hi = np.percentile(boot[p], [2.5, 97.5]) if enough else (np.nan, np.nan)
            rows.append({"preset": p, "score": label, "hypervolume": value, "ci_low": float(lo), "ci_high": float(hi),
                         "n_seeds": len(seeds), "resamples": distinct_resamples(len(seeds)),
                         "ref_kl_z": ref[0], "ref_value": ref[1]})
    return pd.DataFrame(rows, columns=COLUMNS)


def with_reference(front: pd.DataFrame, hv: pd.DataFrame) -> pd.DataFrame:
    """frontier.parquet's rows with the reference point of their score's hypervolume."""
    refs = hv.drop_duplicates("score").set_index("score")[["ref_kl_z", "ref_value"]]
    return front.join(refs, on="score") if len(front) else front.assign(ref_kl_z=[], ref_value=[])


def robustness(trials: pd.DataFrame, kl_cap: float) -> pd.DataFrame:
    """The presets ranked by hypervolume (best first) at each reference point of a grid around
    the stated one: rows score, ref_kl_z, ref_value, ranking."""
    t = evaluated(trials)
    rows = []
    for column, (label, higher) in SCORES.items():
        if t.empty or column not in t or t[column].notna().sum() == 0 or METRICS[column].chance is None:
            continue
        chance = METRICS[column].chance
        perfect = (1.0 if higher else 0.0)
        for kf in KL_FACTORS:
            for share in SCORE_SHARES:
                ref = (kl_cap * kf, chance + share * (perfect - chance))
                hv = _per_preset(t, column, ref)
                order = sorted(hv, key=lambda p: -hv[p])
                rows.append({"score": label, "ref_kl_z": ref[0], "ref_value": ref[1],
                             "ranking": " > ".join(f"{p} ({hv[p]:.3g})" for p in order)})
    return pd.DataFrame(rows, columns=["score", "ref_kl_z", "ref_value", "ranking"])
