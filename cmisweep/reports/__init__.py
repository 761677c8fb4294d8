"""Reports of a sweep (docs/design.md section 5), written at the end of every run and by
`cmisweep report`:

    results/<sweep>/trials.parquet     one row per trial: config, final metrics, status, error
    results/<sweep>/frontier.parquet   per regularizer, the Pareto front of KL(z) vs each score
    results/<sweep>/reports/           kl_vs_<score>.png (Fig. 3), report.md (claims, Tables 4/5
                                       layout, hypervolumes, matched-KL comparisons, paired t-tests
                                       with Holm's correction), paired_tests.csv, hypervolume.csv,
                                       claims.csv
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.files import atomic_write, atomic_write_text
from cmisweep.reports.claims import judge
from cmisweep.status import TrialStatus
from cmisweep.reports.frontier import KL as KL_COLUMN
from cmisweep.reports.frontier import SCORES, frontier
from cmisweep.reports.hypervolume import hypervolumes, with_reference
from cmisweep.reports.plots import plot_kl_vs
from cmisweep.reports.search import plot_search, searched_points
from cmisweep.reports.tables import (TABLE_METRICS, UNITS_NOTE, interpolated_kl_table, matched_kl_table,
                                     method_by_gamma, paired_tests)
from cmisweep.reports.trials import collect_trials


def write_reports(sweep_dir: Path, space, exp_dir: str | None = None) -> pd.DataFrame:
    """Write every report of a sweep; returns the trials frame. exp_dir: Tune's experiment
    (default sweep_dir/tune; a URI on a cluster with shared storage)."""
    trials = collect_trials(exp_dir or str(sweep_dir / "tune"), space)
    atomic_write(sweep_dir / "trials.parquet", lambda p: trials.to_parquet(p, index=False))
    hv = hypervolumes(trials)
    front = with_reference(frontier(trials), hv)
    atomic_write(sweep_dir / "frontier.parquet", lambda p: front.to_parquet(p, index=False))
    out = sweep_dir / "reports"
    out.mkdir(exist_ok=True)
    atomic_write(out / "hypervolume.csv", lambda p: hv.to_csv(p, index=False))
    plots = []
    for column in SCORES:
        if column in trials and trials[column].notna().any():
            p = plot_kl_vs(trials, front, column, out / f"kl_vs_{column.split('/')[-1]}.png")
            if p is not None:
                plots.append(p)
    points = searched_points(trials, space)
    if len(points):
        atomic_write(out / "search_points.csv", lambda p: points.to_csv(p, index=False))
        p = plot_search(points, space, out / "search_points.png")
        if p is not None:
            plots.append(p)
    tests = paired_tests(trials)
    atomic_write(out / "paired_tests.csv", lambda p: tests.to_csv(p, index=False))
    claims = judge(tests)
    atomic_write(out / "claims.csv", lambda p: claims.to_csv(p, index=False))
    atomic_write_text(out / "report.md", markdown(space.name, trials, front, tests, plots, points, hv, claims))
    return trials


def markdown(name: str, trials: pd.DataFrame, front: pd.DataFrame, tests: pd.DataFrame, plots: list[Path],
             points: pd.DataFrame | None = None, hv: pd.DataFrame | None = None,
             claims: pd.DataFrame | None = None) -> str:
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"# Sweep {name}", "", f"{len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    if claims is not None and len(claims):
        lines += ["## Claims of the paper (CMI-VAE against each baseline, paired by gamma and seed)", "",
                  "reproduced / not reproduced: Holm-adjusted p < 0.05 with the difference in / against the "
                  "paper's direction; inconclusive otherwise. mean_diff: CMI minus baseline in the units below; "
                  "d_z: mean_diff / std of the paired differences.", "",
                  claims.to_markdown(index=False, floatfmt=".3g"), ""]
    lines += [UNITS_NOTE, ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    for col, label in TABLE_METRICS.items():
        table = method_by_gamma(trials, col)
        if not table.empty:
            lines += [f"## {label} (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
    if hv is not None and len(hv):
        lines += ["## Hypervolume of each front (minimize KL(z), optimize the score; pymoo)", "",
                  "The area each preset's front dominates up to the reference point (the sweep's worst KL(z) and "
                  "score, 5% beyond); 95% interval: seeds resampled with replacement. Stored values (fractions).", "",
                  hv.to_markdown(index=False, floatfmt=".4g"), ""]
    for col, (score, _) in SCORES.items():
        label, table = interpolated_kl_table(trials, col)
        if not table.empty:
            lines += [f"## {label} at matched KL(z), interpolated along each seed's front (mean ± std over seeds)",
                      "", table.to_markdown(), ""]
    for label in front["score"].unique() if len(front) else []:
        label, m = matched_kl_table(front, label)  # in the report's units
        if not m.empty:
            lines += [f"## {label} at matched KL(z): the best each regularizer reaches with KL(z) <= k", "",
                      m.to_markdown(floatfmt=".4g"), ""]
    if points is not None and len(points):
        lines += ["## Points the searcher tried (objectives: mean over seed replicates, as told to the sampler)", "",
                  points.to_markdown(index=False, floatfmt=".4g"), ""]
    stopped = trials[trials["status"] == TrialStatus.STOPPED] if len(trials) else trials
    if len(stopped):
        lines += ["## Stopped early by the scheduler", ""] + [
            f"- {r['name']}: at epoch {r['stopped_at']}" + ("" if pd.isna(r.get(KL_COLUMN)) else ", evaluated")
            for _, r in stopped.iterrows()] + [""]
    if len(tests):
        lines += ["## Paired t-tests (scipy.stats.ttest_rel) across gamma x seeds, gamma > 0; p_holm: Holm over "
                  "the metrics tested against each baseline", "",
                  tests.to_markdown(index=False, floatfmt=".4g"), ""]
    failed = trials[trials["status"] == TrialStatus.FAILED] if len(trials) else trials
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- {r['name']}: {r['error']}" for _, r in failed.iterrows()] + [""]
    return "\n".join(lines)


def headline(name: str, trials: pd.DataFrame, claims: pd.DataFrame | None, plot_url: str | None) -> str:
    """The parent run's description in the MLflow UI (Markdown): what a person lands on first, the
    KL(z)-vs-score plot and the headline tables; report.md in its artifacts has the rest."""
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"**Sweep {name}**: {len(trials)} trials (" + ", ".join(f"{v} {k}" for k, v in counts.items()) + "). "
             "Full report: artifacts, reports/report.md.", ""]
    if plot_url:
        lines += [f"![KL(z) against the downstream score, one front per regularizer]({plot_url})", ""]
    for col in (KL_COLUMN, *SCORES):
        table = method_by_gamma(trials, col) if col in trials else pd.DataFrame()
        if not table.empty:
            lines += [f"**{TABLE_METRICS[col]}** (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
            if col != KL_COLUMN:
                break  # KL(z) and the first score: the paper's Fig. 3 in numbers
    if claims is not None and len(claims):
        lines += ["**Claims of the paper**", "", claims.to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(lines)


__all__ = ["write_reports", "headline", "collect_trials", "frontier", "paired_tests"]
