"""Reports of a sweep (DESIGN.md section 5), written at the end of every run and by
`cmisweep report`:

    results/<sweep>/trials.parquet     one row per trial: config, final metrics, status, error
    results/<sweep>/frontier.parquet   per regularizer, the Pareto front of KL(z) vs each score
    results/<sweep>/reports/           kl_vs_<score>.png (Fig. 3), report.md (Tables 4/5 layout,
                                       matched-KL comparison, paired t-tests), paired_tests.csv
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cmisweep.reports.frontier import KL as KL_COLUMN
from cmisweep.reports.frontier import SCORES, frontier
from cmisweep.reports.plots import plot_kl_vs
from cmisweep.reports.search import plot_search, searched_points
from cmisweep.reports.tables import TABLE_METRICS, UNITS_NOTE, matched_kl_table, method_by_gamma, paired_tests
from cmisweep.reports.trials import collect_trials


def write_reports(sweep_dir: Path, space, exp_dir: str | None = None) -> pd.DataFrame:
    """Write every report of a sweep; returns the trials frame. exp_dir: Tune's experiment
    (default sweep_dir/tune; a URI on a cluster with shared storage)."""
    trials = collect_trials(exp_dir or str(sweep_dir / "tune"), space)
    _atomic(lambda p: trials.to_parquet(p, index=False), sweep_dir / "trials.parquet")
    front = frontier(trials)
    _atomic(lambda p: front.to_parquet(p, index=False), sweep_dir / "frontier.parquet")
    out = sweep_dir / "reports"
    out.mkdir(exist_ok=True)
    plots = []
    for column in SCORES:
        if column in trials and trials[column].notna().any():
            p = plot_kl_vs(trials, front, column, out / f"kl_vs_{column.split('/')[-1]}.png")
            if p is not None:
                plots.append(p)
    points = searched_points(trials, space)
    if len(points):
        _atomic(lambda p: points.to_csv(p, index=False), out / "search_points.csv")
        p = plot_search(points, space, out / "search_points.png")
        if p is not None:
            plots.append(p)
    tests = paired_tests(trials)
    _atomic(lambda p: tests.to_csv(p, index=False), out / "paired_tests.csv")
    _atomic(lambda p: p.write_text(markdown(space.name, trials, front, tests, plots, points)), out / "report.md")
    return trials


def markdown(name: str, trials: pd.DataFrame, front: pd.DataFrame, tests: pd.DataFrame, plots: list[Path],
             points: pd.DataFrame | None = None) -> str:
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"# Sweep {name}", "", f"{len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    lines += [UNITS_NOTE, ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    for col, label in TABLE_METRICS.items():
        table = method_by_gamma(trials, col)
        if not table.empty:
            lines += [f"## {label} (mean ± std over seeds; columns: gamma)", "", table.to_markdown(), ""]
    for label in front["score"].unique() if len(front) else []:
        label, m = matched_kl_table(front, label)  # in the report's units
        if not m.empty:
            lines += [f"## {label} at matched KL(z): the best each regularizer reaches with KL(z) <= k", "",
                      m.to_markdown(floatfmt=".4g"), ""]
    if points is not None and len(points):
        lines += ["## Points the searcher tried (objectives: mean over seed replicates, as told to the sampler)", "",
                  points.to_markdown(index=False, floatfmt=".4g"), ""]
    stopped = trials[trials["status"] == "STOPPED"] if len(trials) else trials
    if len(stopped):
        lines += ["## Stopped early by the scheduler", ""] + [
            f"- {r['name']}: at epoch {r['stopped_at']}" + ("" if pd.isna(r.get(KL_COLUMN)) else ", evaluated")
            for _, r in stopped.iterrows()] + [""]
    if len(tests):
        lines += ["## Paired t-tests (scipy.stats.ttest_rel) across gamma x seeds, gamma > 0", "",
                  tests.to_markdown(index=False, floatfmt=".4g"), ""]
    failed = trials[trials["status"] == "FAILED"] if len(trials) else trials
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- {r['name']}: {r['error']}" for _, r in failed.iterrows()] + [""]
    return "\n".join(lines)


def _atomic(write, path: Path) -> None:
    """Write beside, then rename: a crash never leaves a half-written report."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


__all__ = ["write_reports", "collect_trials", "frontier", "paired_tests"]
