"""Seed-level inference (docs/design.md 5.2): the unit of replication is the seed, so every test
here takes one number per seed (the mean over that seed's paired differences across gammas).

- The test: the exact sign-flip (paired permutation) test of the mean. Under the null of no
  effect each seed's difference is as likely positive as negative, so all 2^n sign patterns are
  equally likely; p is the share whose |mean| reaches the observed one. It assumes no normality,
  which 3-10 seeds cannot check, and its smallest p, 2^(1-n) two-sided, says plainly what a design
  can decide (3 seeds: 0.25).
- The interval: the sign-flip test inverted (every shift it does not reject), unbounded when the
  design's smallest p is above the level.
- Power: from an upper 80% confidence bound on the seed-level standard deviation (Browne 1995),
  the t-test's minimum detectable effect at this n and the seeds a smallest effect of interest
  needs, at Bonferroni's alpha / m (Holm's first step); never "observed power".
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

EXACT_UP_TO = 16  # seeds: 65536 sign patterns; beyond, a fixed Monte Carlo draw of them
DRAWS = 20000


def _signs(n: int) -> np.ndarray:
    if n <= EXACT_UP_TO:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    rng = np.random.default_rng(0)
    return np.vstack([np.ones(n), rng.choice((1.0, -1.0), size=(DRAWS, n))])


def sign_flip_p(d, alternative: str = "two-sided") -> float:
    """Exact p of the sign-flip test of mean(d) = 0 (alternative: two-sided, greater, less)."""
    d = np.asarray(d, float)
    if len(d) == 0 or not np.isfinite(d).all():
        return float("nan")
    means = _signs(len(d)) @ d / len(d)
    obs, tol = d.mean(), 1e-12 * max(1.0, np.abs(d).max())
    if alternative == "greater":
        return float(np.mean(means >= obs - tol))
    if alternative == "less":
        return float(np.mean(means <= obs + tol))
    return float(np.mean(np.abs(means) >= abs(obs) - tol))


def smallest_p(n: int, two_sided: bool = True) -> float:
    """The smallest p the sign-flip test can reach with n seeds, whatever the data."""
    return min(1.0, 2.0 ** (1 - n) if two_sided else 2.0 ** -n)


def sign_flip_ci(d, level: float = 0.95) -> tuple[float, float]:
    """The shifts delta for which the two-sided test of mean(d - delta) = 0 does not reject at
    1 - level; (-inf, inf) when no data of this n could reject."""
    d = np.asarray(d, float)
    alpha = 1 - level
    if len(d) == 0 or not np.isfinite(d).all() or smallest_p(len(d)) > alpha:
        return -math.inf, math.inf
    mean = d.mean()
    span = 10 * (np.ptp(d) + abs(mean) + 1e-12)

    def accepted(delta: float) -> bool:
        return sign_flip_p(d - delta) > alpha

    bounds = []
    for far in (mean - span, mean + span):
        inside, outside = mean, far  # accepted at the mean, rejected far away
        for _ in range(50):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if accepted(mid) else (inside, mid)
        bounds.append(inside)
    return float(bounds[0]), float(bounds[1])


def seed_sd_upper(d, confidence: float = 0.8) -> float:
    """An upper confidence bound on the standard deviation of the per-seed differences."""
    d = np.asarray(d, float)
    n = len(d)
    if n < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1)))


def seeds_floor(alpha: float, two_sided: bool = True) -> int:
    """The fewest seeds whose sign-flip test can reach p < alpha."""
    n = 1
    while smallest_p(n, two_sided) >= alpha:
        n += 1
    return n


def minimum_detectable(sd_upper: float, n: int, alpha: float, power: float) -> float:
    """The effect (in the differences' units) a t-test on n seeds finds with this power at alpha;
    inf when the exact test cannot reach alpha at n."""
    from statsmodels.stats.power import TTestPower

    if n < seeds_floor(alpha) or not np.isfinite(sd_upper):
        return math.inf
    if sd_upper == 0:
        return 0.0
    try:
        es = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided")
    except (ValueError, RuntimeError):
        return math.inf
    return float(es * sd_upper) if es is not None and np.isfinite(es) else math.inf


def seeds_needed(sesoi: float | None, sd_upper: float, alpha: float, power: float, two_sided: bool = True) -> float:
    """Seeds for a t-test to find an effect of sesoi with this power at alpha, and at least the
    exact test's floor; NaN without a smallest effect of interest or a spread."""
    from statsmodels.stats.power import TTestPower

    if sesoi is None or not np.isfinite(sd_upper):
        return float("nan")
    floor = seeds_floor(alpha, two_sided)
    if sd_upper == 0:
        return float(floor)
    try:
        n = TTestPower().solve_power(effect_size=sesoi / sd_upper, alpha=alpha, power=power,
                                     alternative="two-sided" if two_sided else "larger")
    except (ValueError, RuntimeError):
        return float("nan")
    return float(max(floor, math.ceil(n))) if n is not None and np.isfinite(n) else float("nan")
