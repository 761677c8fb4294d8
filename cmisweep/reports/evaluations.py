"""Which evaluation produced each number (docs/design.md section 7).

A trial's metrics come from its own end (the evaluation at training) or from `cmisweep evaluate`,
whose every result is a row of results/<sweep>/evaluations.parquet: the trial, the column, the
value, the evaluation's id (a digest of its metric group and settings), how its trials were
selected, its settings, the commit and the machine. The reports apply that history to the trials:
the latest evaluation of a column wins, and report.md says which one each column uses. A claim
pairs values of one evaluation only (for_claims). Values from an evaluation that selected the front
(`--trials front`) are for exploring: selecting on the outcome biases them, so the claims never
see them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cmisweep.vocabulary import EVAL_METRICS, EVALUATIONS_FILE, MODELS_DIR, eval_metrics

HISTORY_COLUMNS = ["trial_id", "name", "metric", "column", "value", "evaluation", "selection", "settings",
                   "commit", "cpu_model", "device", "evaluated_at"]
FRONT = "front"  # the selection whose values never feed a claim


def read_history(sweep_dir: Path) -> pd.DataFrame:
    path = Path(sweep_dir) / EVALUATIONS_FILE
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)


def latest(history: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of each trial and column (rows are appended in time order)."""
    return history.drop_duplicates(["name", "column"], keep="last")


def apply(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The trials with each column's latest evaluated value in place of the one at training."""
    if history.empty or trials.empty:
        return trials
    t = trials.copy()
    pos = {n: i for i, n in enumerate(t["name"])}
    for column, rows in latest(history).groupby("column", sort=False):
        values = t[column].to_numpy(float, copy=True) if column in t else np.full(len(t), np.nan)
        for name, value in zip(rows["name"], rows["value"]):
            if name in pos:
                values[pos[name]] = value
        t[column] = values
    return t


def current(history: pd.DataFrame) -> dict[str, str]:
    """{column: the id of the latest evaluation that wrote it}."""
    return history.drop_duplicates("column", keep="last").set_index("column")["evaluation"].to_dict()


def for_claims(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The trials as the claims see them. Once `cmisweep evaluate` has written a column, a claim
    pairs only values of the column's latest evaluation (one setting on both sides of every pair):
    a trial whose value comes from its own end or from another evaluation reads as missing, and so
    does a value from an evaluation that selected the front. The claim then reads "not evaluated"
    until every trial of its cells carries the latest evaluation."""
    if history.empty:
        return trials
    t = trials.copy()
    last, now = latest(history), current(history)
    for column, rows in last.groupby("column"):
        if column not in t:
            continue
        ok = set(rows.loc[(rows["evaluation"] == now[column]) & (rows["selection"] != FRONT), "name"])
        t.loc[~t["name"].isin(ok), column] = np.nan
    return t


def coverage(trials: pd.DataFrame, history: pd.DataFrame, kind: str, deferred: list[str]) -> pd.DataFrame:
    """Per metric group: the trials that carry it, how many at training and how many from which
    evaluation (its id, selection, settings, commit, when), and whether the space defers it."""
    rows = []
    done = trials[trials["final/test/kl_z"].notna()] if "final/test/kl_z" in trials else trials.iloc[0:0]
    last = latest(history)
    for group in eval_metrics(kind):
        head = EVAL_METRICS[group].columns[0]
        has = done[head].notna() if head in done else pd.Series(False, index=done.index)
        mine = last[last["column"] == head]
        runs = [f"{e} ({r['selection'].iloc[0]}, {len(r)} trials, commit {r['commit'].iloc[0]}, "
                f"{str(r['evaluated_at'].iloc[-1])[:16]})" for e, r in mine.groupby("evaluation", sort=False)]
        rows.append({"metric": group, "deferred": group in deferred, "trials_with_it": f"{int(has.sum())}/{len(done)}",
                     "at_training": int(has.sum()) - int(done["name"].isin(set(mine["name"])).sum()),
                     "evaluate_runs": "; ".join(runs) or "-"})
    return pd.DataFrame(rows, columns=["metric", "deferred", "trials_with_it", "at_training", "evaluate_runs"])


def models(sweep_dir: Path, trials: pd.DataFrame) -> tuple[int, list[str]]:
    """(kept models, names of the evaluated trials whose model is not under models/)."""
    done = trials[trials["final/test/kl_z"].notna()] if "final/test/kl_z" in trials else trials.iloc[0:0]
    d = Path(sweep_dir) / MODELS_DIR
    missing = [n for n in done["name"] if not (d / f"{n}.pt").is_file()]
    return len(done) - len(missing), missing
