"""report.md, section by section (docs/design.md section 5): the collapse first, then the claims,
the tables, the fronts and the descriptive tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.reports.claims import design_note
from cmisweep.reports.frontier import SCORES
from cmisweep.reports.hypervolume import MIN_RESAMPLES
from cmisweep.reports.seeds import by_machine
from cmisweep.reports.tables import (TABLE_METRICS, UNITS_NOTE, interpolated_kl_table, matched_kl_table,
                                     method_by_gamma)
from cmisweep.status import TrialStatus
from cmisweep.vocabulary import COLLAPSE_KL, IHAT_CONVERGED, KL

CLAIM_VIEW = ["source", "claim", "reading", "comparison", "baseline", "verdict", "estimate", "ci_low", "ci_high", "p", "p_holm",
              "p_min", "n_seeds", "n_pairs", "mde", "sesoi", "seeds_needed", "collapsed_ref", "collapsed_base",
              "estimate_no_collapse", "critics_settled", "units"]
CLAIMS_NOTE = (
    "Verdicts (docs/design.md 5.2): reproduced / contradicted when Holm's p < alpha, by the direction; inconclusive "
    "when the design could have decided and did not; undecidable at n when no data of this many seeds could pass "
    "Holm; not evaluated when a trial lacks the metric; no verdict when the I-hat reading missed its bound against "
    "analytic I at the study's shapes (docs/design.md 3.2): it is estimated, untested and outside Holm's family. "
    "An I-hat claim names its reading (form, head). estimate: the mean over seeds of each seed's mean paired "
    "difference (CMI minus baseline, units in the last column), with the sign-flip test's interval (95%; 90% for "
    "the TOST); mde: the smallest effect this n detects with 80% power; seeds_needed: for the declared smallest "
    "effect (sesoi). estimate_no_collapse leaves out the pairs with a collapsed trial: conditional on an outcome of "
    "the treatment, it favours the preset that collapses more; read it beside the collapse counts. "
    "critics_settled (I-hat claims): of the paired trials' I-hat critics, how many settled by the doubling rule's "
    "cap (docs/design.md 3); the others are read as they stood at the cap.")


def _md(frame: pd.DataFrame, fmt: str = ".4g") -> str:
    return frame.to_markdown(index=False, floatfmt=fmt)


def _rows(trials: pd.DataFrame, status: TrialStatus) -> pd.DataFrame:
    return trials[trials["status"] == status] if len(trials) else trials


def collapse_section(tables: dict) -> list[str]:
    rates, mcnemar = tables.get("collapse", pd.DataFrame()), tables.get("collapse_tests", pd.DataFrame())
    if not len(rates):
        return []
    lines = ["## Collapse", "", f"A trial has collapsed when its test KL(z) is below {COLLAPSE_KL:g} nats "
             "(docs/design.md 5.1). Collapsed trials count in every rate and every score test below; they are "
             "neither dropped nor imputed. Interval: Clopper-Pearson 95%.", "", _md(rates, ".3g"), ""]
    if len(mcnemar):
        lines += ["CMI against each baseline on the same (gamma, seed) cells, McNemar's exact test on the "
                  "discordant pairs (descriptive, unadjusted):", "", _md(mcnemar, ".3g"), ""]
    return lines


def claims_section(tables: dict, alpha: float) -> list[str]:
    claims = tables.get("claims", pd.DataFrame())
    if not len(claims):
        return []
    return ["## Claims of the paper", "", design_note(claims, alpha), "", CLAIMS_NOTE, "",
            _md(claims[[c for c in CLAIM_VIEW if c in claims]], ".3g"), ""] + machines_section(tables)


def machines_section(tables: dict) -> list[str]:
    """Where the seeds ran more than one machine: each machine's seeds and mean (reports.seeds)."""
    table = by_machine(tables.get("seed_differences", pd.DataFrame()))
    if table.empty:
        return []
    return ["### The seeds by machine", "", "The seeds ran on more than one machine (CPU, training precision), "
            "each pair on one: the tests above take every seed alike, so their estimate is the average over these "
            "machines. Each machine's seeds and their mean difference, descriptive (seed_differences.csv lists "
            "every seed's):", "", _md(table, ".3g"), ""]


def factorial_section(tables: dict, alpha: float) -> list[str]:
    """The main effects of a grid's two-level settings (reports.factorial)."""
    from cmisweep.reports.factorial import RESPONSES, note

    table = tables.get("factorial", pd.DataFrame())
    if not len(table):
        return []
    out = ["## Main effects of the grid's two-level settings (search.design, search.params)", "", note(table, alpha), ""]
    for response, label in RESPONSES.items():
        part = table[table["response"] == response].drop(columns="response")
        if len(part):
            out += [f"Response: {label}.", "", _md(part, ".3g"), ""]
    return out


def unpaired_section(unpaired: dict[str, str]) -> list[str]:
    """Plug-in regularizers that no claim pairs with CMI, each with the reason."""
    if not unpaired:
        return []
    return ["## Plug-in regularizers outside the paired claims", "",
            "Compared with CMI on the fronts, the hypervolume and matched KL(z) below, not trial by trial:", ""] + \
        [f"- {name}: {why}" for name, why in unpaired.items()] + [""]


def tables_section(trials: pd.DataFrame) -> list[str]:
    lines = []
    for col, lab in TABLE_METRICS.items():
        table = method_by_gamma(trials, col)
        if not table.empty:
            lines += [f"## {lab} (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
    return lines


def fronts_section(trials: pd.DataFrame, front: pd.DataFrame, tables: dict) -> list[str]:
    lines = []
    hv = tables.get("hypervolume", pd.DataFrame())
    if len(hv):
        lines += ["## Hypervolume of each front (minimize KL(z), optimize the score; pymoo)", "",
                  "The area each preset's front of seed means dominates up to a reference point fixed before the "
                  "data: KL(z) at the analysis' cap and the score at chance (docs/design.md 5.3). 95% interval "
                  f"from seeds resampled with replacement, only where at least {MIN_RESAMPLES} distinct resamples "
                  "exist (`resamples`). Stored values (fractions).", "", _md(hv), "",
                  "Rankings over a grid of reference points (hypervolume_robustness.csv):", "",
                  _md(tables.get("hypervolume_robustness", pd.DataFrame())), ""]
    for col in SCORES:
        lab, table = interpolated_kl_table(trials, col)
        if not table.empty:
            lines += [f"## {lab} at matched KL(z), interpolated along each seed's front (mean ± std over seeds)", "",
                      "Where the presets' cells at a level rest on different seeds, each cell names its seeds.", "",
                      table.to_markdown(), ""]
    for lab in front["score"].unique() if len(front) else []:
        lab, m = matched_kl_table(front, lab)  # in the report's units
        if not m.empty:
            lines += [f"## {lab} at matched KL(z): the best each regularizer reaches with KL(z) <= k", "",
                      m.to_markdown(floatfmt=".4g"), ""]
    return lines


def trials_section(trials: pd.DataFrame, tables: dict, points: pd.DataFrame | None, history: bool) -> list[str]:
    lines = []
    if points is not None and len(points):
        lines += ["## Points the searcher tried (objectives: mean over seed replicates, as told to the sampler)", "",
                  _md(points), ""]
    stopped = _rows(trials, TrialStatus.STOPPED)
    if len(stopped):
        lines += ["## Stopped early by the scheduler", ""] + [
            f"- {r['name']}: at epoch {r['stopped_at']}" + ("" if pd.isna(r.get(KL)) else ", evaluated")
            + (f" ({r['stop_reason']})" if pd.notna(r.get("stop_reason")) else "")
            for _, r in stopped.iterrows()] + [""]
    tests = tables.get("paired_tests", pd.DataFrame())
    if len(tests):
        lines += ["## Every metric, CMI against each baseline (descriptive: unadjusted, outside the family)", "",
                  "mean_diff_pairs: over all pairs; estimate, interval (95%) and p: the seed as the unit, sign-flip "
                  "test.", "", _md(tests), ""]
    repeats = trials[trials["repeat_of"].notna()] if "repeat_of" in trials else trials.iloc[0:0]
    if len(repeats):
        lines += ["## Repeated trials (kept in trials.parquet, counted once)", ""] + [
            f"- {r['name']} ({r['trial_id']}): repeats {r['repeat_of']}" for _, r in repeats.iterrows()] + [""]
    failed = _rows(trials, TrialStatus.FAILED)
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- {r['name']}: {r['error']}" for _, r in failed.iterrows()] + [""]
    recorded = "cpu_model" in trials and trials["cpu_model"].notna().any()
    return lines + ["## Records", "", "Per-epoch history: " + (
        "epochs.parquet." if history else "not recorded (the sweep ran before epochs.parquet)."),
        "Machine and precision per trial: trials.parquet's cpu_model and precision"
        + ("" if recorded else " (not recorded for this sweep)") + ".", ""]


def ihat_checks(trials: pd.DataFrame) -> list[str]:
    """The trials whose I-hat critics did not settle, or whose paper form reads below the exact
    form (docs/design.md section 3): claims built on them say so here."""
    out = []
    if IHAT_CONVERGED in trials:
        bad = trials.loc[trials[IHAT_CONVERGED] == 0, "name"].tolist()
        out.append(f"I-hat critics converged (the doubling rule) in {int((trials[IHAT_CONVERGED] == 1).sum())} "
                   f"trials; not within max_steps in {len(bad)}" + (f": {', '.join(bad)}." if bad else "."))
    for col, head in (("final/ihat_forms_consistent", "the model's head"), ("final/ihat_mlp_forms_consistent", "the MLP head")):
        if col in trials:
            bad = trials.loc[trials[col] == 0, "name"].tolist()
            out.append(f"I-hat forms inconsistent with {head} (paper form below the exact form beyond their spread) "
                       f"in {len(bad)} trials" + (f": {', '.join(bad)}." if bad else "."))
    for col, head in (("final/ihat_families_agree", "the model's head"), ("final/ihat_mlp_families_agree", "the MLP head")):
        if col in trials:
            bad = trials.loc[trials[col] == 0, "name"].tolist()
            out.append(f"InfoNCE above the exact form beyond 10% with {head} (the E[logit] read-out under-reads) in "
                       f"{len(bad)} trials" + (f": {', '.join(bad)}." if bad else "."))
    if not out and "final/ihat_paper" in trials and trials["final/ihat_paper"].notna().any():
        out.append("I-hat of this sweep comes from critics trained a fixed number of steps (before the doubling "
                   "rule): its convergence was not checked.")
    return out + ([""] if out else [])


def ihat_kl_section(tables: dict) -> list[str]:
    """I-hat apart from KL(z): at matched KL(z) and as a share of I(x;z) (reports.ihat_kl)."""
    matched, share = tables.get("ihat_matched_kl", pd.DataFrame()), tables.get("ihat_share", pd.DataFrame())
    if not len(matched) and not len(share):
        return []
    lines = ["## I-hat(z;s) apart from KL(z) (descriptive: the seed as the unit, sign-flip p, unadjusted)", "",
             "At one gamma CMI may keep less KL(z): a lower I-hat can be less information in z. At matched KL(z): "
             "each seed's I-hat-vs-KL(z) curve read at 5 levels of the two presets' overlap, CMI minus the "
             "baseline. As a share: the exact form over I(x;z) ~ KL(z) - (paper - exact), pair by pair. The exact "
             "form is the quantity the claim is about; the paper form with the model's head is the paper's Table 1.",
             ""]
    for frame in (matched, share):
        if len(frame):
            lines += [_md(frame), ""]
    return lines


def evaluation_section(tables: dict, models: tuple[int, list[str]] | None, trials: pd.DataFrame) -> list[str]:
    """Which trials carry which metric, from which evaluation; which models are kept."""
    cov = tables.get("evaluated_metrics", pd.DataFrame())
    lines = ["## Metrics and their evaluations", "",
             "Each metric's value is its latest evaluation: at the trial's end (at_training) or by `cmisweep "
             "evaluate` (evaluations.parquet). A claim is judged only when every trial of its cells carries its "
             "metric from one evaluation (the latest that wrote it: one setting on both sides of every pair); "
             "values from an evaluation of the front alone never feed a claim.", ""]
    if len(cov):
        lines += [_md(cov), ""]
    lines += ihat_checks(trials)
    if models is not None:
        kept, missing = models
        lines += [f"Kept models (models/, fp16): {kept} of {kept + len(missing)} evaluated trials"
                  + (": every trial can be re-evaluated." if not missing else
                     f"; missing: {', '.join(missing[:20])}" + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
                     + " (these cannot be re-evaluated without training them again)."), ""]
    return lines


def markdown(name: str, trials: pd.DataFrame, front: pd.DataFrame, tables: dict[str, pd.DataFrame],
             plots: list[Path], points: pd.DataFrame | None = None, alpha: float = 0.05, history: bool = False,
             models: tuple[int, list[str]] | None = None, unpaired: dict[str, str] | None = None) -> str:
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    repeats = int(trials["repeat_of"].notna().sum()) if "repeat_of" in trials else 0
    head = [f"# Sweep {name}", "", f"{len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            + (f"; {repeats} repeat an earlier trial's point and seed and count once" if repeats else ""), ""]
    return "\n".join(head + collapse_section(tables) + factorial_section(tables, alpha) + claims_section(tables, alpha) + unpaired_section(unpaired or {})
                     + ihat_kl_section(tables) + evaluation_section(tables, models, trials)
                     + [UNITS_NOTE, ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
                     + tables_section(trials) + fronts_section(trials, front, tables)
                     + trials_section(trials, tables, points, history))
