"""Reports of a sweep (docs/design.md section 5), written at the end of every run and by
`cmisweep report`:

    results/<sweep>/trials.parquet     one row per trial: config, final metrics, status, error,
                                       collapsed, repeat_of, cpu_model, precision
    results/<sweep>/epochs.parquet     one row per trial and epoch (train/, val/ results)
    results/<sweep>/frontier.parquet   per regularizer, the Pareto front of KL(z) vs each score
    results/<sweep>/reports/           report.md (collapse first, then the claims, Tables 4/5 layout,
                                       hypervolumes, matched-KL comparisons, descriptive tests),
                                       kl_vs_<score>.png (Fig. 3), claims.csv, collapse.csv,
                                       collapse_tests.csv, hypervolume.csv, hypervolume_robustness.csv,
                                       paired_tests.csv
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.analysis import kl_cap
from cmisweep.files import atomic_write, atomic_write_text
from cmisweep.reports import collapse
from cmisweep.reports.claims import design_note, judge
from cmisweep.reports.frontier import SCORES, frontier
from cmisweep.reports.hypervolume import MIN_RESAMPLES, hypervolumes, robustness, with_reference
from cmisweep.reports.plots import plot_kl_vs
from cmisweep.reports.search import plot_search, searched_points
from cmisweep.reports.tables import (TABLE_METRICS, UNITS_NOTE, interpolated_kl_table, matched_kl_table,
                                     method_by_gamma, paired_tests)
from cmisweep.reports.trials import prepare
from cmisweep.status import TrialStatus
from cmisweep.vocabulary import COLLAPSE_KL, KL, plot_file

def write_reports(sweep_dir: Path, space, trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write every report of a sweep from its trials (and per-epoch history, when given); returns
    the trials frame as written. Reads no Tune state: a committed sweep's files are enough."""
    trials = prepare(trials)
    atomic_write(sweep_dir / "trials.parquet", lambda p: trials.to_parquet(p, index=False))
    if epochs is not None and len(epochs):
        atomic_write(sweep_dir / "epochs.parquet", lambda p: epochs.to_parquet(p, index=False))
    cap = kl_cap(space.analysis, space.trial.data.dataset)
    hv = hypervolumes(trials, cap)
    front = with_reference(frontier(trials), hv)
    atomic_write(sweep_dir / "frontier.parquet", lambda p: front.to_parquet(p, index=False))
    out = sweep_dir / "reports"
    out.mkdir(exist_ok=True)
    tables = {"hypervolume": hv, "hypervolume_robustness": robustness(trials, cap),
              "collapse": collapse.rates(trials), "collapse_tests": collapse.mcnemar(trials),
              "paired_tests": paired_tests(trials), "claims": judge(trials, space.analysis)}
    for stem, frame in tables.items():
        atomic_write(out / f"{stem}.csv", lambda p, f=frame: f.to_csv(p, index=False))
    plots = []
    for column in SCORES:
        if column in trials and trials[column].notna().any():
            p = plot_kl_vs(trials, column, out / plot_file(column))
            if p is not None:
                plots.append(p)
    points = searched_points(trials, space)
    if len(points):
        atomic_write(out / "search_points.csv", lambda p: points.to_csv(p, index=False))
        p = plot_search(points, space, out / "search_points.png")
        if p is not None:
            plots.append(p)
    history = (sweep_dir / "epochs.parquet").exists()
    atomic_write_text(out / "report.md", markdown(space.name, trials, front, tables, plots, points,
                                                  alpha=space.analysis.alpha, history=history))
    return trials


def _md(frame: pd.DataFrame, fmt: str = ".4g") -> str:
    return frame.to_markdown(index=False, floatfmt=fmt)


CLAIM_VIEW = ["source", "claim", "comparison", "baseline", "verdict", "estimate", "ci_low", "ci_high", "p", "p_holm",
              "p_min", "n_seeds", "n_pairs", "mde", "sesoi", "seeds_needed", "collapsed_ref", "collapsed_base",
              "estimate_no_collapse", "units"]


def markdown(name: str, trials: pd.DataFrame, front: pd.DataFrame, tables: dict[str, pd.DataFrame],
             plots: list[Path], points: pd.DataFrame | None = None, alpha: float = 0.05, history: bool = False) -> str:
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    repeats = trials[trials["repeat_of"].notna()] if "repeat_of" in trials else trials.iloc[0:0]
    lines = [f"# Sweep {name}", "", f"{len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())
             + (f"; {len(repeats)} repeat an earlier trial's point and seed and count once" if len(repeats) else ""),
             ""]
    rates, mcnemar = tables.get("collapse", pd.DataFrame()), tables.get("collapse_tests", pd.DataFrame())
    if len(rates):
        lines += ["## Collapse", "", f"A trial has collapsed when its test KL(z) is below {COLLAPSE_KL:g} nats "
                  "(docs/design.md 5.1). Collapsed trials count in every rate and every score test below; they are "
                  "neither dropped nor imputed. Interval: Clopper-Pearson 95%.", "", _md(rates, ".3g"), ""]
        if len(mcnemar):
            lines += ["CMI against each baseline on the same (gamma, seed) cells, McNemar's exact test on the "
                      "discordant pairs (descriptive, unadjusted):", "", _md(mcnemar, ".3g"), ""]
    claims = tables.get("claims", pd.DataFrame())
    if len(claims):
        lines += ["## Claims of the paper", "", design_note(claims, alpha), "",
                  "Verdicts (docs/design.md 5.2): reproduced / contradicted when Holm's p < alpha, by the direction; "
                  "inconclusive when the design could have decided and did not; undecidable at n when no data of "
                  "this many seeds could pass Holm; not evaluated when a trial lacks the metric. estimate: the mean "
                  "over seeds of each seed's mean paired difference (CMI minus baseline, units in the last column), "
                  "with the sign-flip test's interval (95%; 90% for the TOST); mde: the smallest effect this n "
                  "detects with 80% power; seeds_needed: for the declared smallest effect (sesoi). "
                  "estimate_no_collapse leaves out the pairs with a collapsed trial: conditional on an outcome of "
                  "the treatment, it favours the preset that collapses more; read it beside the collapse counts.",
                  "", _md(claims[CLAIM_VIEW], ".3g"), ""]
    lines += [UNITS_NOTE, ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    for col, lab in TABLE_METRICS.items():
        table = method_by_gamma(trials, col)
        if not table.empty:
            lines += [f"## {lab} (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
    hv = tables.get("hypervolume", pd.DataFrame())
    if len(hv):
        lines += ["## Hypervolume of each front (minimize KL(z), optimize the score; pymoo)", "",
                  "The area each preset's front of seed means dominates up to a reference point fixed before the "
                  "data: KL(z) at the analysis' cap and the score at chance (docs/design.md 5.3). 95% interval "
                  f"from seeds resampled with replacement, only where at least {MIN_RESAMPLES} distinct resamples "
                  "exist (`resamples`). Stored values (fractions).", "", _md(hv), "",
                  "Rankings over a grid of reference points (hypervolume_robustness.csv):", "",
                  _md(tables["hypervolume_robustness"]), ""]
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
    if points is not None and len(points):
        lines += ["## Points the searcher tried (objectives: mean over seed replicates, as told to the sampler)", "",
                  _md(points), ""]
    stopped = trials[trials["status"] == TrialStatus.STOPPED] if len(trials) else trials
    if len(stopped):
        lines += ["## Stopped early by the scheduler", ""] + [
            f"- {r['name']}: at epoch {r['stopped_at']}" + ("" if pd.isna(r.get(KL)) else ", evaluated")
            for _, r in stopped.iterrows()] + [""]
    tests = tables.get("paired_tests", pd.DataFrame())
    if len(tests):
        lines += ["## Every metric, CMI against each baseline (descriptive: unadjusted, outside the family)", "",
                  "mean_diff_pairs: over all pairs; estimate, interval (95%) and p: the seed as the unit, sign-flip "
                  "test.", "", _md(tests), ""]
    if len(repeats):
        lines += ["## Repeated trials (kept in trials.parquet, counted once)", ""] + [
            f"- {r['name']} ({r['trial_id']}): repeats {r['repeat_of']}" for _, r in repeats.iterrows()] + [""]
    failed = trials[trials["status"] == TrialStatus.FAILED] if len(trials) else trials
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- {r['name']}: {r['error']}" for _, r in failed.iterrows()] + [""]
    lines += ["## Records", "", "Per-epoch history: " + ("epochs.parquet." if history else
              "not recorded (the sweep ran before epochs.parquet)."), "Machine and precision per trial: "
              "trials.parquet's cpu_model and precision" + ("" if "cpu_model" in trials and trials["cpu_model"].notna().any()
                                                            else " (not recorded for this sweep)") + ".", ""]
    return "\n".join(lines)


def headline(name: str, trials: pd.DataFrame, claims: pd.DataFrame | None, plot_url: str | None) -> str:
    """The parent run's description in the MLflow UI (Markdown): what a person lands on first, the
    KL(z)-vs-score plot and the headline tables; report.md in its artifacts has the rest."""
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"**Sweep {name}**: {len(trials)} trials (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + "). "
             "Full report: artifacts, reports/report.md.", ""]
    if plot_url:
        lines += [f"![KL(z) against the downstream score, one front per regularizer]({plot_url})", ""]
    for col in (KL, *SCORES):
        table = method_by_gamma(trials, col) if col in trials else pd.DataFrame()
        if not table.empty:
            lines += [f"**{TABLE_METRICS[col]}** (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
            if col != KL:
                break  # KL(z) and the first score: the paper's Fig. 3 in numbers
    if claims is not None and len(claims):
        view = [c for c in ("source", "claim", "comparison", "baseline", "verdict", "estimate", "ci_low", "ci_high",
                            "p_holm", "n_seeds") if c in claims]
        lines += ["**Claims of the paper**", "", claims[view].to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(lines)


__all__ = ["write_reports", "headline", "frontier", "paired_tests"]
