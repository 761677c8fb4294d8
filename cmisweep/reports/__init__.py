"""Reports of a sweep (docs/design.md section 5), written at the end of every run and by
`cmisweep report`:

    results/<sweep>/trials.parquet     one row per trial: config, final metrics, status, error,
                                       collapsed, repeat_of, cpu_model, precision
    results/<sweep>/epochs.parquet     one row per trial and epoch (train/, val/ results)
    results/<sweep>/frontier.parquet   per regularizer, the Pareto front of KL(z) vs each score
    (results/<sweep>/evaluations.parquet, written by `cmisweep evaluate`, is applied first:
    reports.evaluations)
    results/<sweep>/reports/           report.md (collapse first, then the claims, Tables 4/5 layout,
                                       hypervolumes, matched-KL comparisons, descriptive tests),
                                       kl_vs_<score>.png (Fig. 3), claims.csv, collapse.csv,
                                       collapse_tests.csv, hypervolume.csv, hypervolume_robustness.csv,
                                       paired_tests.csv, evaluated_metrics.csv,
                                       ihat_matched_kl.csv, ihat_share.csv, kl_curves.csv,
                                       c_read_curves.csv (the critic's C-hat over KL(z), per epoch),
                                       seed_differences.csv (each seed's number in each claim, and the
                                       machine it ran on)
                                       and kl_curves.png (per-epoch KL(z), where epochs.parquet is)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.analysis import kl_cap
from cmisweep.files import atomic_write, atomic_write_text
from cmisweep.reports import collapse, curves, evaluations, factorial, ihat_kl, seeds
from cmisweep.reports.claims import judge
from cmisweep.reports.frontier import SCORES, frontier
from cmisweep.reports.hypervolume import hypervolumes, robustness, with_reference
from cmisweep.reports.markdown import markdown
from cmisweep.reports.plots import plot_kl_vs
from cmisweep.reports.search import plot_search, searched_points
from cmisweep.reports.tables import TABLE_METRICS, method_by_gamma, paired_tests
from cmisweep.reports.trials import prepare
from cmisweep.vocabulary import EVAL_METRICS, KL, modality, plot_file


def write_reports(sweep_dir: Path, space, trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write every report of a sweep from its trials (and per-epoch history, when given); returns
    the trials frame as written. Reads no Tune state: a committed sweep's files are enough."""
    history = evaluations.read_history(sweep_dir)
    trials = evaluations.apply(prepare(trials), history)  # the latest evaluation of each metric
    atomic_write(sweep_dir / "trials.parquet", lambda p: trials.to_parquet(p, index=False))
    if epochs is not None and len(epochs):
        atomic_write(sweep_dir / "epochs.parquet", lambda p: epochs.to_parquet(p, index=False))
    cap = kl_cap(space.analysis, space.trial.data.dataset)
    kind = modality(space.trial.data.dataset)
    deferred = {c for m in space.trial.evaluation.defer for c in EVAL_METRICS[m].columns}
    hv = hypervolumes(trials, cap)
    for_claims = evaluations.for_claims(trials, history)
    front = with_reference(frontier(trials), hv)
    atomic_write(sweep_dir / "frontier.parquet", lambda p: front.to_parquet(p, index=False))
    out = sweep_dir / "reports"
    out.mkdir(exist_ok=True)
    tables = {"hypervolume": hv, "hypervolume_robustness": robustness(trials, cap),
              "collapse": collapse.rates(trials), "collapse_tests": collapse.mcnemar(trials),
              "paired_tests": paired_tests(trials),
              "claims": judge(for_claims, space.analysis, deferred, kind),
              "seed_differences": seeds.seed_differences(for_claims, space.analysis, deferred, kind),
              "evaluated_metrics": evaluations.coverage(trials, history, kind, space.trial.evaluation.defer)}
    rows = space.search.combos() if space.algorithm.kind == "grid" else []
    if factorial.factors(rows):  # two-level settings (a design, a 2 x 2): main effects, the seed as the unit
        tables["factorial"] = factorial.main_effects(trials, rows)
    tables["ihat_matched_kl"] = ihat_kl.at_matched_kl(trials)
    tables["ihat_share"] = ihat_kl.share_of_information(trials)
    tables["claims"] = ihat_kl.annotate(tables["claims"], tables["ihat_matched_kl"])
    plots = []
    if epochs is None and (sweep_dir / "epochs.parquet").exists():  # a committed sweep: its file
        epochs = pd.read_parquet(sweep_dir / "epochs.parquet")
    if epochs is not None and len(epochs):
        tables["kl_curves"] = curves.kl_curves(epochs, trials)
        if len(c_read := curves.c_read_curves(epochs, trials)):
            tables["c_read_curves"] = c_read
        p = curves.plot_kl_curves(tables["kl_curves"], out / "kl_curves.png")
        plots += [p] if p is not None else []
    for stem, frame in tables.items():
        atomic_write(out / f"{stem}.csv", lambda p, f=frame: f.to_csv(p, index=False))
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
    atomic_write_text(out / "report.md", markdown(space.name, trials, front, tables, plots, points,
                                                  alpha=space.analysis.alpha, history=(sweep_dir / "epochs.parquet").exists(),
                                                  models=evaluations.models(sweep_dir, trials),
                                                  unpaired=unpaired_plugins(space)))
    return trials


def unpaired_plugins(space) -> dict[str, str]:
    """The space's plug-in presets that no claim pairs with CMI, and why (docs/design.md section 9)."""
    from cmisweep.regularizer import PRESETS

    declared = {c.baseline for c in space.analysis.family}
    return {p: ("it declares no gamma axis (gamma_param), so no CMI trial shares its gamma"
                if space.search.gamma_axis(p) is None else
                "not a baseline of the declared family (analysis.family); declare it to pair it at equal gamma")
            for p in space.search.presets if p not in PRESETS and p not in declared}


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
        view = [c for c in ("source", "claim", "reading", "comparison", "baseline", "verdict", "estimate", "ci_low", "ci_high",
                            "p_holm", "n_seeds") if c in claims]
        lines += ["**Claims of the paper**", "", claims[view].to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(lines)


__all__ = ["write_reports", "headline", "frontier", "paired_tests"]
