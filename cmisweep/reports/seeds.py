"""Each seed's number in each claim, and the machine it came from (docs/design.md 5.2).

A claim's test takes one number per seed: CMI minus the baseline, averaged over the seed's gammas
(reports.pairing.per_seed). seed_differences lists those numbers for every claim of the family,
with the CPU and precision the seed's trials ran on. A study run in sittings can span machines (the
trainer trains bf16 where the CPU has it natively and fp32 elsewhere: cmisweep.device), and then
the machine is a second factor, confounded with the seed blocks. The sign-flip test stays valid
(each seed's pair ran on one machine, so under no effect its difference is still symmetric about
zero), but the effect it estimates is the average over the machines used; by_machine gives each
machine's mean and seeds, for a reader to see whether the effect moves with it. A pair whose two
trials ran on different machines is named in its seed's machine ("A | B").
"""
from __future__ import annotations

import pandas as pd

from cmisweep.analysis import CLAIMS, IHAT_READINGS, Analysis, reading_name
from cmisweep.reports.claims import RATIO_UNITS, claim_cells, claim_text
from cmisweep.reports.pairing import pair_values, per_seed
from cmisweep.vocabulary import label

COLUMNS = ["source", "claim", "reading", "comparison", "baseline", "seed", "difference", "n_pairs", "machine", "units"]


def _machine(side: pd.DataFrame) -> pd.Series:
    """'<cpu>, <precision>' of each trial on one side of the pairs ('?' where not recorded)."""
    cpu = side["cpu_model"] if "cpu_model" in side else pd.Series("?", index=side.index)
    precision = side["precision"] if "precision" in side else pd.Series("?", index=side.index)
    return cpu.fillna("?").astype(str) + ", " + precision.fillna("?").astype(str)


def _pair_machines(pairs: pd.DataFrame) -> pd.Series:
    """Per pair: the machine both trials ran on, or 'A | B' where they differ."""
    ref = _machine(pairs.rename(columns=lambda c: c.removesuffix("_ref")))
    base = _machine(pairs.rename(columns=lambda c: c.removesuffix("_base")))
    return ref.where(ref == base, ref + " | " + base)


def seed_differences(trials: pd.DataFrame, analysis: Analysis | None = None, deferred=(),
                     kind: str = "image") -> pd.DataFrame:
    """One row per claim of the family (each reading, as claims.judge lists them) and seed: the
    seed's mean difference in the claim's units (the KL(z) ratio - 1 for Table 5), its pairs, and
    the machine(s) they ran on."""
    cells, _ = claim_cells(trials, analysis, deferred, kind)
    rows = []
    for fc, c, column, _ in cells:
        spec = CLAIMS[fc.claim]
        values = pair_values(c.pairs, column, ratio=spec.sign == 0)
        machines = _pair_machines(c.pairs.loc[values.index]).groupby(values["seed"]).agg(
            lambda m: " + ".join(sorted(set(m))))
        for seed, difference in per_seed(values).items():
            rows.append({"source": spec.source, "claim": claim_text(fc), "comparison": c.variant,
                         "baseline": fc.baseline, "seed": seed, "difference": float(difference),
                         "n_pairs": int((values["seed"] == seed).sum()), "machine": machines[seed],
                         "reading": reading_name(column) if column in IHAT_READINGS else "",
                         "units": RATIO_UNITS if spec.sign == 0 else label(column)})
    return pd.DataFrame(rows, columns=COLUMNS)


def by_machine(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim and machine: the seeds, their mean difference and its range. Empty when every seed
    ran on one machine (nothing to compare)."""
    if table.empty or table["machine"].nunique() < 2:
        return pd.DataFrame()
    keys = ["source", "claim", "reading", "comparison", "baseline", "machine"]
    out = table.groupby(keys, sort=False).agg(
        seeds=("seed", lambda s: ", ".join(str(int(x)) for x in sorted(s))), n_seeds=("seed", "size"),
        mean=("difference", "mean"), low=("difference", "min"), high=("difference", "max"))
    return out.reset_index()


__all__ = ["seed_differences", "by_machine"]
