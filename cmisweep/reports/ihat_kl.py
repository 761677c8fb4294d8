"""The claim about I(z;s) apart from KL(z) (docs/design.md 5.4).

"Lower I-hat at the same gamma" may be no more than "less information in z": at one gamma CMI can
keep less KL(z) than the baseline. Two readings separate the two, per I-hat reading (form and head):

- at matched KL(z): each seed's curve of I-hat against KL(z) over its gammas (the seed's vanilla
  trial at gamma 0 on every preset's curve), read by linear interpolation at 5 KL levels spanning
  the overlap of the two presets' curves (never extrapolated); the seed's mean difference over the
  levels is its number, and the seed is the unit (the exact sign-flip test, descriptive);
- as a share of I(x;z): KL(z) = E_x KL(q(z|x) || p(z)) = I(x;z) + KL(q(z) || p(z)), and the paper
  form minus the exact form estimates KL(q(z) || p(z)), so I(x;z) ~ KL(z) - (paper - exact); the
  share is exact / I(x;z), compared pair by pair at the same gamma and seed.
The exact form is the quantity the claim is about (I(z;s)); the paper form is the paper's Table 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cmisweep.analysis import IHAT_READINGS as READINGS, reading_name
from cmisweep.reports import inference as inf
from cmisweep.reports.pairing import comparisons
from cmisweep.reports.trials import evaluated
from cmisweep.vocabulary import KL

COLUMNS = ["comparison", "baseline", "reading", "form", "head", "n_seeds", "estimate", "p", "seeds"]
LEVELS = 5


def _curve(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """One seed's (KL(z), I-hat) points, sorted by KL(z)."""
    g = rows.dropna(subset=[KL, column])
    order = np.argsort(g[KL].to_numpy(float), kind="stable")
    return g[KL].to_numpy(float)[order], g[column].to_numpy(float)[order]


def _matched(ref: tuple, base: tuple) -> float | None:
    """Mean of ref - base over LEVELS KL levels spanning the overlap of the two curves."""
    if len(ref[0]) < 2 or len(base[0]) < 2:
        return None
    lo, hi = max(ref[0][0], base[0][0]), min(ref[0][-1], base[0][-1])
    if not hi > lo:
        return None
    ks = np.linspace(lo, hi, LEVELS)
    return float(np.mean(np.interp(ks, *ref) - np.interp(ks, *base)))


def at_matched_kl(trials: pd.DataFrame) -> pd.DataFrame:
    """Per CMI variant, baseline and I-hat reading: the seeds' matched-KL differences."""
    t = evaluated(trials)
    rows = []
    for c in comparisons(trials):
        ref_names, base_names = set(c.pairs["name_ref"]), set(c.pairs["name_base"])
        for column, (form, head) in READINGS.items():
            if column not in t or t[column].isna().all():
                continue
            per_seed = {}
            ref_rows = t[t["name"].isin(ref_names) | (t["preset"] == "vanilla")]
            base_rows = t[t["name"].isin(base_names) | (t["preset"] == "vanilla")]
            for seed in sorted(set(c.pairs["seed"])):
                d = _matched(_curve(ref_rows[ref_rows["seed"] == seed], column),
                             _curve(base_rows[base_rows["seed"] == seed], column))
                if d is not None:
                    per_seed[int(seed)] = d
            d = np.array(list(per_seed.values()))
            rows.append({"comparison": c.variant, "baseline": c.baseline, "reading": reading_name(column),
                         "form": form, "head": head, "n_seeds": len(d),
                         "estimate": float(d.mean()) if len(d) else np.nan,
                         "p": inf.sign_flip_p(d) if len(d) else np.nan,
                         "seeds": ", ".join(f"{s}: {v:+.3g}" for s, v in per_seed.items())})
    return pd.DataFrame(rows, columns=COLUMNS)


def share_of_information(trials: pd.DataFrame) -> pd.DataFrame:
    """Per CMI variant, baseline and head: the exact form as a share of I(x;z), pair by pair."""
    rows = []
    for c in comparisons(trials):
        p = c.pairs
        for prefix, head in (("final/ihat", "model's head"), ("final/ihat_mlp", "MLP head")):
            need = [f"{prefix}_{f}_{side}" for f in ("paper", "exact") for side in ("ref", "base")]
            if any(col not in p for col in need):
                continue

            def share(side: str) -> pd.Series:
                exact, paper = p[f"{prefix}_exact_{side}"], p[f"{prefix}_paper_{side}"]
                return exact / (p[f"{KL}_{side}"] - (paper - exact))

            diff = pd.DataFrame({"seed": p["seed"], "diff": share("ref") - share("base")}).dropna()
            d = diff.groupby("seed")["diff"].mean()
            rows.append({"comparison": c.variant, "baseline": c.baseline, "reading": f"exact form / I(x;z), {head}",
                         "form": "exact", "head": head, "n_seeds": len(d),
                         "estimate": float(d.mean()) if len(d) else np.nan,
                         "p": inf.sign_flip_p(d) if len(d) else np.nan,
                         "seeds": ", ".join(f"{s}: {v:+.3g}" for s, v in d.items())})
    return pd.DataFrame(rows, columns=COLUMNS)


def annotate(claims: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """The I-hat claims (those with a reading: claims.judge) with whether their direction holds at
    matched KL(z) in that reading: in every seed, in none, mixed, or not measured (no KL overlap)."""
    from cmisweep.analysis import CLAIMS

    out = claims.copy()
    out["at_matched_kl"] = ""
    for i, r in out.iterrows():
        if not isinstance(r.get("reading"), str) or not r["reading"]:
            continue
        spec = CLAIMS["ihat"]
        form, head = r["reading"].split(" form, ")
        m = matched[(matched["comparison"] == r["comparison"]) & (matched["baseline"] == r["baseline"])
                    & (matched["form"] == form) & (matched["head"] == head)]
        seeds = [float(x.split(": ")[1]) for x in m["seeds"].iloc[0].split(", ")] if len(m) and m["seeds"].iloc[0] else []
        if not seeds:
            out.loc[i, "at_matched_kl"] = "not measured (no KL(z) overlap)"
            continue
        agree = sum(np.sign(v) == spec.sign for v in seeds)
        against = sum(np.sign(v) == -spec.sign for v in seeds)
        est = f"{m['estimate'].iloc[0]:+.3g}"
        out.loc[i, "at_matched_kl"] = (f"holds in every seed ({est})" if agree == len(seeds) else
                                       f"does not hold: reversed in every seed ({est})" if against == len(seeds) else
                                       f"mixed: {agree} of {len(seeds)} seeds in the claim's direction ({est})")
    return out
