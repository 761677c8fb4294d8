"""The paper's claims, judged with the seed as the unit (docs/design.md 5.2).

The family is every (claim, baseline) the space's `analysis.family` declares, each CMI variant a
member of its own; a sweep that declared none is judged on every paper claim it measured against
every baseline it ran, labelled post hoc. Holm's correction runs over the family. Per member:
- the per-seed mean paired difference (CMI minus baseline, the report's units), its exact
  sign-flip p and the inverted test's 95% interval; for Table 5's equivalence claim, the relative
  KL(z) gap and its TOST (two one-sided sign-flip tests against the margin) with a 90% interval;
- the I-hat reading it rests on (analysis.claim_columns): the exact form of a head that met its
  bound against analytic I; the paper's Table 1 reading is reported beside it (or alone, where no
  head met its bound), estimated but untested and outside the Holm family (no verdict);
- the smallest p the design can reach, and the verdict (cmisweep.vocabulary.Verdict): undecidable
  at n when even that p would not pass Holm, reproduced / contradicted when the Holm-adjusted p is
  below alpha (by the direction), inconclusive otherwise; not evaluated when a trial of the cells
  lacks the metric;
- power: the minimum detectable effect at n and the seeds a declared smallest effect needs;
- collapses on either side and, labelled conditional, the estimate without the collapsed pairs
  (conditional on an outcome of the treatment, so it favours the preset that collapses more).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from cmisweep.analysis import CLAIMS, DEFAULT_MARGIN, IHAT_READINGS, Analysis, FamilyClaim, claim_columns, reading_name
from cmisweep.reports import inference as inf
from cmisweep.reports.pairing import Comparison, comparisons, missing, pair_values, per_seed
from cmisweep.reports.trials import evaluated
from cmisweep.vocabulary import IHAT_CONVERGED, Verdict, label

COLUMNS = ["source", "claim", "comparison", "baseline", "family", "test", "unit", "n_seeds", "n_pairs", "estimate",
           "ci_low", "ci_high", "ci_level", "p", "p_min", "p_holm", "verdict", "sd_seed", "mde", "sesoi",
           "seeds_needed", "collapsed_ref", "collapsed_base", "estimate_no_collapse", "n_pairs_no_collapse", "units",
           "reading", "critics_settled", "in_family"]
SIGN_FLIP = "exact sign-flip test of the per-seed mean difference"
TOST = "TOST: two one-sided sign-flip tests against the margin"
RATIO_UNITS = "KL(z) ratio - 1 (fraction)"  # Table 5's equivalence claim is tested on the relative gap


def claim_text(fc: FamilyClaim) -> str:
    """The claim as the reports name it; the equivalence claim with its margin."""
    spec = CLAIMS[fc.claim]
    return spec.text + (f" (±{fc.margin or DEFAULT_MARGIN:.0%})" if spec.sign == 0 else "")


def family(trials: pd.DataFrame, analysis: Analysis | None, deferred=()) -> tuple[list[FamilyClaim], str]:
    """The claims Holm runs over and how they were chosen: declared, post hoc, or (none declared)
    every paper claim measured (or deferred: its column in `deferred`) against every baseline run,
    post hoc."""
    if analysis is not None and analysis.family:
        return list(analysis.family), "post hoc" if analysis.post_hoc else "declared"
    t = evaluated(trials)
    # the paper's baselines: a plug-in is a baseline only where the family declares it
    baselines = sorted(set(t["preset"]) & {"beta", "advmi"}) if len(t) else []
    out = [FamilyClaim(claim=name, baseline=b) for name, spec in CLAIMS.items() for b in baselines
           if (spec.column in deferred or spec.column in t and t[spec.column].notna().any())
           and (spec.sign != 0 or b == "beta")]
    return out, "post hoc: no family was declared before the run"


def claim_cells(trials: pd.DataFrame, analysis: Analysis | None, deferred=(),
                kind: str = "image") -> tuple[list[tuple[FamilyClaim, Comparison, str, bool]], str]:
    """Every row claims.csv has: (member, its comparison of CMI with the baseline, the column it
    reads, whether that reading may decide), and how the family was chosen (family())."""
    members, how = family(trials, analysis, deferred)
    by_base: dict[str, list[Comparison]] = {}
    for c in comparisons(trials):
        by_base.setdefault(c.baseline, []).append(c)
    return [(fc, c, column, decides) for fc in members for c in by_base.get(fc.baseline, [])
            for column, decides in claim_columns(fc.claim, kind)], how


def _settled(pairs: pd.DataFrame) -> str:
    """'k/n': of the paired trials (each counted once, both sides), how many had I-hat critics that
    settled by the doubling rule's cap; '' where the trials do not record it (fixed steps)."""
    sides = [pairs[[f"name_{s}", f"{IHAT_CONVERGED}_{s}"]].set_axis(["name", "settled"], axis=1)
             for s in ("ref", "base") if f"{IHAT_CONVERGED}_{s}" in pairs and f"name_{s}" in pairs]
    flags = pd.concat(sides).drop_duplicates("name")["settled"].dropna() if sides else pd.Series(dtype=float)
    return f"{int((flags == 1).sum())}/{len(flags)}" if len(flags) else ""


def _member(fc: FamilyClaim, variant: str, pairs: pd.DataFrame, how: str, alpha: float, column: str,
            decides: bool) -> dict:
    spec = CLAIMS[fc.claim]
    equivalence = spec.sign == 0
    values = pair_values(pairs, column, ratio=equivalence)
    d = per_seed(values)
    n = len(d)
    margin = (fc.margin or DEFAULT_MARGIN) if equivalence else None
    row = {"source": spec.source, "claim": claim_text(fc),
           "comparison": variant, "baseline": fc.baseline, "family": how, "test": TOST if equivalence else SIGN_FLIP,
           "unit": "seed", "_key": fc.claim, "_effect": margin if equivalence else fc.sesoi, "n_seeds": n, "n_pairs": len(values), "sesoi": fc.sesoi,
           "units": RATIO_UNITS if equivalence else label(column), "_decides": decides,
           "reading": reading_name(column) if column in IHAT_READINGS else "",
           "critics_settled": _settled(pairs) if column in IHAT_READINGS else "",
           "collapsed_ref": int(values["collapsed_ref"].sum()), "collapsed_base": int(values["collapsed_base"].sum())}
    if n == 0 or missing(pairs, column):
        return row | {"verdict": Verdict.NOT_EVALUATED.value, "p": np.nan, "p_min": np.nan}
    est = float(d.mean())
    if equivalence:
        if abs(est) <= margin:  # evidence for the claim: inside the margin on both sides
            p = max(inf.sign_flip_p(d + margin, "greater"), inf.sign_flip_p(d - margin, "less"))
        else:  # evidence against it: beyond the margin on the side observed
            p = inf.sign_flip_p(d + margin, "less") if est < 0 else inf.sign_flip_p(d - margin, "greater")
        p_min, level = inf.smallest_p(n, two_sided=False), 1 - 2 * alpha
    else:
        p, p_min, level = inf.sign_flip_p(d), inf.smallest_p(n), 1 - alpha
    lo, hi = inf.sign_flip_ci(d, level)
    kept = values[~values["collapsed_ref"] & ~values["collapsed_base"]]
    return row | {"estimate": est, "ci_low": lo, "ci_high": hi, "ci_level": level, "p": p, "p_min": p_min,
                  "sd_seed": float(d.std(ddof=1)) if n > 1 else np.nan,
                  "_sd_upper": inf.seed_sd_upper(d), "_inside": abs(est) <= margin if equivalence else None,
                  "estimate_no_collapse": float(per_seed(kept).mean()) if len(kept) else np.nan,
                  "n_pairs_no_collapse": len(kept)}


def _holm(p: pd.Series) -> pd.Series:
    out = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(), method="holm")[1]
    return out


def judge(trials: pd.DataFrame, analysis: Analysis | None = None, deferred=(), kind: str = "image") -> pd.DataFrame:
    """One row per member of the family, CMI variant x (claim, baseline), and beside an I-hat
    member the paper's Table 1 reading, outside the family (analysis.claim_columns). deferred: columns the
    sweep left to `cmisweep evaluate` (their claims read "not evaluated" until every cell has them).
    kind: the modality, which decides the I-hat reading a claim may rest on."""
    alpha = analysis.alpha if analysis else 0.05
    power = analysis.power if analysis else 0.8
    cells, how = claim_cells(trials, analysis, deferred, kind)
    rows = [_member(fc, c.variant, c.pairs, how, alpha, column, decides) for fc, c, column, decides in cells]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    claims = pd.DataFrame(rows)
    tested = claims["_decides"].astype(bool)  # a reading off its ground truth is estimated, not tested
    m = max(int(tested.sum()), 1)
    claims["p_holm"] = _holm(claims["p"].where(tested))
    decidable = _holm(claims["p_min"].where(tested)) < alpha  # the best case: every member at its smallest p
    verdicts, mde, needed = [], [], []
    for i, r in claims.iterrows():
        if not tested[i]:  # outside the family: no power at its threshold either
            verdicts.append(r["verdict"] if r.get("verdict") == Verdict.NOT_EVALUATED else Verdict.NO_VERDICT.value)
            mde.append(np.nan)
            needed.append(np.nan)
            continue
        two_sided = "TOST" not in r["test"]
        mde.append(inf.minimum_detectable(r.get("_sd_upper", np.nan), int(r["n_seeds"]), alpha / m, power)
                   if two_sided else np.nan)
        effect = r["_effect"] if pd.notna(r["_effect"]) else None  # the sesoi, or the TOST's margin
        needed.append(inf.seeds_needed(effect, r.get("_sd_upper", np.nan), alpha / m, power, two_sided))
        if r.get("verdict") == Verdict.NOT_EVALUATED:
            verdicts.append(r["verdict"])
        elif not decidable[i]:
            verdicts.append(Verdict.UNDECIDABLE.at(int(r["n_seeds"])))
        elif r["p_holm"] < alpha:
            claimed = r["_inside"] if not two_sided else r["estimate"] * CLAIMS[r["_key"]].sign > 0
            verdicts.append(Verdict.REPRODUCED.value if claimed else Verdict.CONTRADICTED.value)
        else:
            verdicts.append(Verdict.INCONCLUSIVE.value)
    claims["verdict"], claims["mde"], claims["seeds_needed"] = verdicts, mde, needed
    claims["in_family"] = tested
    for col in COLUMNS:
        if col not in claims:
            claims[col] = np.nan
    return claims[COLUMNS]


def design_note(claims: pd.DataFrame, alpha: float = 0.05) -> str:
    """What this design can decide: the family's size, its smallest p, Holm's first threshold."""
    if "in_family" in claims:  # a reading off its ground truth is reported, not tested
        claims = claims[claims["in_family"].astype(bool)]
    if claims.empty:
        return ""
    m = len(claims)
    n = claims["n_seeds"].replace(0, np.nan).min()
    if not np.isfinite(n):
        return f"Family: {m} members, {claims['family'].iloc[0]}; no member was evaluated."
    n = int(n)
    floor = inf.seeds_floor(alpha / m)
    return (f"Family: {m} members, {claims['family'].iloc[0]}; Holm at alpha = {alpha:g}; the first step needs "
            f"p < {alpha / m:.3g}. Unit: the seed (n = {n}): the exact two-sided sign-flip test reaches at best "
            f"p = {inf.smallest_p(n):.3g} ({inf.smallest_p(n, False):.3g} one-sided), so "
            + ("no claim can be decided at this n whatever the data" if inf.smallest_p(n, False) >= alpha / m else
               "a claim can be decided") + f"; {floor} seeds are the floor for a two-sided claim in this family. "
            "Seeds vary the initialisation and the batch order on one fixed data subset (data.split_seed): the "
            "conclusions hold for that subset.")
