"""Main effects of a grid's two-level settings (`search.design` rows crossed with `search.params`,
docs/design.md 5.5), with the seed as the unit of replication.

A factor is a key that takes two values across the grid's settings rows; its reference level ("-")
is the value in the first row. Effects are read within each preset's trials (a critic setting is
no factor of beta's). For each factor and seed the effect is the mean response of the
seed's runs at the other level ("+") minus that of its runs at the reference; across seeds: the
mean effect, the exact sign-flip test of the per-seed effects and its interval (reports.inference),
Holm over the factors of one preset and response. Responses: collapsed (the share of runs, an outcome counted
like any other) and log10 test KL(z). In a fraction of a factorial a main effect is aliased with
interactions: the table says which rows were run, not what is aliased.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from cmisweep.reports.inference import seeds_floor, sign_flip_ci, sign_flip_p, smallest_p
from cmisweep.vocabulary import KL

COLUMNS = ["preset", "response", "factor", "reference", "other", "n_seeds", "effect", "ci_low", "ci_high", "p",
           "p_holm", "p_min", "seeds"]
RESPONSES = {"collapsed": "share of runs collapsed", "log10_kl_z": "log10 test KL(z) [nats]"}


def factors(design: list[dict]) -> dict[str, tuple]:
    """{key: (reference, other)} for every design key with exactly two values across the rows."""
    out = {}
    for key in dict.fromkeys(k for row in design for k in row):
        values = list(dict.fromkeys(row.get(key) for row in design))
        if len(values) == 2:
            out[key] = (design[0].get(key), next(v for v in values if v != design[0].get(key)))
    return out


def _responses(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["collapsed"].notna()] if "collapsed" in trials else trials.iloc[0:0]
    return done.assign(collapsed=done["collapsed"].astype(float),
                       log10_kl_z=np.log10(done[KL].astype(float).clip(lower=1e-4)))


def _block(t: pd.DataFrame, response: str, design_factors: dict[str, tuple]) -> list[dict]:
    """One response's main effects among trials of one preset, Holm over its factors."""
    block = []
    for key, (ref, other) in design_factors.items():
        col = f"params.{key}"
        if col not in t or not len(t):
            continue
        level = t[col].map(lambda v: "+" if v == other else "-" if v == ref else None)
        by_seed = t.assign(level=level).dropna(subset=["level"]).groupby(["seed", "level"])[response].mean()
        wide = by_seed.unstack("level").dropna()
        if not {"+", "-"} <= set(wide.columns):
            continue
        d = (wide["+"] - wide["-"]).to_numpy()
        lo, hi = sign_flip_ci(d)
        block.append({"response": response, "factor": key, "reference": ref, "other": other, "n_seeds": len(d),
                      "effect": float(d.mean()), "ci_low": lo, "ci_high": hi, "p": sign_flip_p(d),
                      "p_min": smallest_p(len(d)),
                      "seeds": " ".join(f"{s}: {v:+.3g}" for s, v in zip(wide.index, d))})
    if block:
        for b, adj in zip(block, multipletests(np.array([b["p"] for b in block]), method="holm")[1]):
            b["p_holm"] = float(adj)
    return block


def main_effects(trials: pd.DataFrame, design: list[dict]) -> pd.DataFrame:
    """One row per (preset, response, factor): the per-seed effects' mean, sign-flip p and interval,
    within each preset's trials (a factor a preset does not carry, e.g. a critic setting for beta,
    has no row for it); Holm over the factors of one preset and response."""
    t = _responses(trials)
    design_factors = factors(design)
    rows = []
    for preset in (t["preset"].unique() if len(t) else []):
        for response in RESPONSES:
            rows += [{"preset": preset, **b} for b in _block(t[t["preset"] == preset], response, design_factors)]
    return pd.DataFrame(rows, columns=COLUMNS)


def note(table: pd.DataFrame, alpha: float) -> str:
    """What the design can decide at its number of seeds."""
    if not len(table):
        return ""
    n = int(table["n_seeds"].min())
    sizes = table[table["response"] == "collapsed"].groupby("preset").size()
    m = int(sizes.max()) if len(sizes) else 1
    floor = smallest_p(n)
    can = floor < alpha / max(1, m)
    return (f"Unit: the seed (n = {n}); per factor, the effect is each seed's mean response at the other level "
            f"minus at the first row's, tested by the exact sign-flip test, Holm over the factors of a preset "
            f"and response (at most {m}). "
            + (f"Holm's first step needs p < {alpha / max(1, m):.3g}, and {n} seeds reach p = {floor:.3g} at best: "
               "a screen that ranks factors, not a test that can decide one." if not can else
               f"Holm's first step needs p < {alpha / max(1, m):.3g}; {n} seeds can reach it.")
            + f" {seeds_floor(alpha / max(1, m))} seeds are the floor for that step.")
