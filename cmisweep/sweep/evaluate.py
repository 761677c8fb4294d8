"""`cmisweep evaluate`: the evaluation as its own stage (docs/design.md section 7).

It loads the kept models of the trials it selects, runs the metric groups asked for as Ray tasks
(one per trial, on the sweep's resources; across a cluster's nodes with --address), appends each
trial's results to evaluations.parquet as soon as its task ends, logs them to the trial's MLflow
child run where the sweep has a tracking store, and rewrites the reports. A trial whose results for
this evaluation (metric group and settings: the evaluation's id) are already recorded is skipped,
so an interrupted evaluate continues where it stopped.

Selections (--trials): all (every evaluated trial); claims (every trial of the cells the claims
pair: the declared family's baselines, or every baseline); front (the trials of the points on a
preset's KL(z) front: for exploring only, its values never feed a claim); or trial names.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from cmisweep.errors import ConfigError
from cmisweep.files import atomic_write
from cmisweep.reports.evaluations import FRONT, HISTORY_COLUMNS, read_history
from cmisweep.status import ExitCode
from cmisweep.vocabulary import EVALUATIONS_FILE, MODELS_DIR, eval_metrics, is_number, modality

SELECTIONS = ("all", "claims", FRONT)


def parse_metrics(text: str, kind: str, space_file: Path) -> list[str]:
    known = eval_metrics(kind)
    asked = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in asked if m not in known]
    if not asked or bad:
        raise ConfigError(None, "--metrics", f"unknown metric {', '.join(bad) or repr(text)} for {kind} data "
                                             f"({space_file}); expected some of {', '.join(known)}")
    return [m for m in known if m in asked]  # the suite's order


def select(trials: pd.DataFrame, asked: list[str], space) -> tuple[list[str], str]:
    """(names of the selected evaluated trials, the selection's label)."""
    from cmisweep.reports.claims import family
    from cmisweep.reports.frontier import frontier
    from cmisweep.reports.pairing import comparisons
    from cmisweep.reports.trials import evaluated

    done = evaluated(trials)
    if asked in ([], ["all"]):
        return list(done["name"]), "all"
    if asked == ["claims"]:
        members, _ = family(done, space.analysis, {c for c in done.columns if c.startswith("final/")})
        bases = {m.baseline for m in members} or set(done["preset"])
        names = set()
        for c in comparisons(done):
            if c.baseline in bases:
                names |= set(c.pairs["name_ref"]) | set(c.pairs["name_base"])
        return [n for n in done["name"] if n in names], "claims"
    if asked == [FRONT]:  # the points on any preset's front of any score (vanilla's: gamma 0)
        front = frontier(done)
        on = {(p, float(g), None if pd.isna(a) else float(a)) for p, g, a in
              zip(front["preset"], front["gamma"], front["alpha"])}
        at_zero = any(g == 0 for _, g, _ in on)
        hit = [r["name"] for _, r in done.iterrows()
               if (r["preset"], float(r["gamma"]), None if pd.isna(r["alpha"]) else float(r["alpha"])) in on
               or (r["preset"] == "vanilla" and at_zero)]
        return hit, FRONT
    unknown = [n for n in asked if n not in set(trials["name"])]
    if unknown:
        raise ConfigError(None, "--trials", f"no trial named {', '.join(unknown[:5])}; expected all, claims, "
                                            "front or names from trials.parquet")
    not_done = [n for n in asked if n not in set(done["name"])]
    if not_done:
        raise ConfigError(None, "--trials", f"trial {', '.join(not_done[:5])} was not evaluated at training "
                                            "(failed, stopped or unfinished): it has no kept model")
    return list(asked), "names"


def kept_models(sweep_dir: Path, names: list[str]) -> dict[str, bytes]:
    """The kept model of each selected trial, checked to load before anything runs."""
    from cmisweep.errors import DataError
    from cmisweep.kept_model import load_kept

    d = sweep_dir / MODELS_DIR
    if not d.is_dir() or not any(d.glob("*.pt")):
        raise ConfigError(None, "SWEEP", f"{sweep_dir} has no kept models ({d}/<trial>.pt): it ran before "
                                         "cmisweep kept them, and its trials must be trained again to be re-evaluated")
    missing = [n for n in names if not (d / f"{n}.pt").is_file()]
    if missing:
        raise ConfigError(None, "--trials", f"{len(missing)} selected trial(s) have no kept model under {d}: "
                                            f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    out = {}
    for n in names:
        try:
            load_kept(d / f"{n}.pt")
        except DataError as e:
            raise ConfigError(None, "--trials", str(e)) from None
        out[n] = (d / f"{n}.pt").read_bytes()
    return out


def evaluation_id(group: str, settings: str) -> str:
    return hashlib.sha1(f"{group}\n{settings}".encode()).hexdigest()[:10]


def code_version() -> str:
    """The commit of the code that evaluates (with -dirty for uncommitted changes to the package)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "cmisweep"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from cmisweep import __version__

        return f"cmisweep {__version__}"


def rows_of(trial: pd.Series, result: dict, ids: dict[str, str], settings: dict[str, str], selection: str,
            commit: str, cpu: str) -> list[dict]:
    """evaluations.parquet rows of one trial's task result {group: {name: value}}."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = result.get("", {}).get("device")
    return [{"trial_id": trial.get("trial_id"), "name": trial["name"], "metric": group, "column": f"final/{k}",
             "value": float(v), "evaluation": ids[group], "selection": selection, "settings": settings[group],
             "commit": commit, "cpu_model": cpu, "device": device, "evaluated_at": now}
            for group, values in result.items() if group for k, v in values.items() if is_number(v)]


def append_history(sweep_dir: Path, rows: list[dict]) -> None:
    """Add rows to evaluations.parquet (written aside and renamed: a kill leaves the old file or the new)."""
    history = read_history(sweep_dir)
    new = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    both = new if history.empty else pd.concat([history, new], ignore_index=True)
    atomic_write(sweep_dir / EVALUATIONS_FILE, lambda p: both.to_parquet(p, index=False))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def space_of(sweep_dir: Path):
    from cmisweep.sweep.runner import committed_trials
    from cmisweep.sweep.space import load_space

    if not ((sweep_dir / "space.yaml").is_file() and (sweep_dir / "trials.parquet").is_file()):
        raise ConfigError(None, "SWEEP", f"no sweep at {sweep_dir} (expected its space.yaml and trials.parquet; "
                                         "a sweep that is still running has no trials.parquet yet)")
    space = load_space(sweep_dir / "space.yaml", stored=True)
    trials, epochs = committed_trials(sweep_dir)
    return space, trials, epochs


def plan(sweep_dir: Path, metrics: str, trials_sel: list[str], sets: list[str]):
    """Everything checked before anything runs: (space, trials, epochs, todo {name: groups},
    models, ids, settings, selection)."""
    from cmisweep.evaluate_kept import with_settings
    from cmisweep.kept_model import load_kept
    from cmisweep.reports.trials import prepare

    bad = [s for s in sets if not s.startswith("evaluation.")]
    if bad:
        raise ConfigError(None, "--set", f"{bad[0]}: evaluate changes evaluation settings only (evaluation.<key>=VALUE)")
    space, trials, epochs = space_of(sweep_dir)
    trials = prepare(trials)
    kind = modality(space.trial.data.dataset)
    groups = parse_metrics(metrics, kind, sweep_dir / "space.yaml")
    names, selection = select(trials, trials_sel, space)
    if not names:
        raise ConfigError(None, "--trials", f"selects no evaluated trial of {sweep_dir} ({' '.join(trials_sel)})")
    models = kept_models(sweep_dir, names)
    _, cfg = load_kept(models[names[0]])
    cfg = with_settings(cfg, sets)  # a bad --set fails here, once
    settings = {g: json.dumps({"metric": g, "evaluation": cfg.evaluation.model_dump(exclude={"defer"}),
                               "set": sorted(sets)}, sort_keys=True) for g in groups}
    # a front evaluation is an id of its own: its trials are evaluated again when the claims' cells are
    ids = {g: evaluation_id(g, settings[g] + (f"\n{FRONT}" if selection == FRONT else "")) for g in groups}
    history = read_history(sweep_dir)
    done = set(zip(history["name"], history["evaluation"]))
    todo = {n: [g for g in groups if (n, ids[g]) not in done] for n in names}
    return space, trials, epochs, {n: g for n, g in todo.items() if g}, models, ids, settings, selection


def _remote(space, address: str | None):
    import ray

    from cmisweep.evaluate_kept import evaluate_kept
    from cmisweep.sweep.runner import _tune_environment, ray_init_options

    _tune_environment()
    ray.init(**ray_init_options(address, space=space))
    threads = max(1, int(space.resources.cpu))
    task = ray.remote(evaluate_kept).options(num_cpus=space.resources.cpu, num_gpus=space.resources.gpu,
                                             max_retries=0)
    return ray, lambda model, groups, sets: task.remote(model, groups, sets, threads)


def run(sweep_dir: Path, metrics: str, trials_sel: list[str], sets: list[str], address: str | None = None) -> int:
    """Evaluate, record, rewrite the reports; the exit code (cmisweep.status.ExitCode)."""
    from cmisweep.device import cpu_model
    from cmisweep.reports import write_reports
    from cmisweep.sweep.tracking import EvaluationLogger

    space, trials, epochs, todo, models, ids, settings, selection = plan(sweep_dir, metrics, trials_sel, sets)
    skipped = len(models) - len(todo)
    _say(f"evaluate {sweep_dir.name}: {len(todo)} trials to evaluate ({', '.join(sorted(set(ids)))}), {skipped} "
         f"recorded before; evaluation ids " + ", ".join(f"{g} {i}" for g, i in ids.items()))
    logger = EvaluationLogger.for_sweep(sweep_dir, space)
    failed, t0 = [], time.time()
    if todo:
        ray, submit = _remote(space, address)
        try:
            pending = {submit(models[n], groups, sets): n for n, groups in todo.items()}
            commit, by_name = code_version(), trials.set_index("name", drop=False)
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready)
                try:
                    result = ray.get(ready)
                except Exception as e:  # noqa: BLE001 - one trial's failure is reported, the others go on
                    failed.append(name)
                    _say(f"{name}: ERROR: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}")
                    continue
                rows = rows_of(by_name.loc[name], result, ids, settings, selection, commit, cpu_model())
                append_history(sweep_dir, rows)
                logger.log(by_name.loc[name], rows)
                done = len(todo) - len(pending)
                _say(f"[{(time.time() - t0) / 60:5.1f} min] {name}: {', '.join(todo[name])} evaluated "
                     f"({result['']['wall_s']:.0f} s) [{done}/{len(todo)}]")
        finally:
            ray.shutdown()
    write_reports(sweep_dir, space, trials, epochs)
    unlogged = logger.unlogged()
    print(f"evaluated {len(todo) - len(failed)} trials in {(time.time() - t0) / 60:.1f} min ({skipped} recorded "
          f"before, {len(failed)} failed); history: {sweep_dir / EVALUATIONS_FILE}; reports: {sweep_dir / 'reports'}",
          flush=True)
    if unlogged:
        _say(f"error: MLflow did not take {unlogged} calls: evaluations.parquet and the reports are complete")
        return ExitCode.TRACKING_INCOMPLETE
    return ExitCode.FAILED_TRIALS if failed else ExitCode.OK
