"""One row per trial from Ray Tune's experiment state: config, final metrics, status, error."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.sweep.search import point_from_config
from cmisweep.sweep.space import point_name
from cmisweep.status import TrialStatus, TuneStatus
from cmisweep.sweep.trainable import GPUS, NODE, STATUS, STOPPED_AT


def collect_trials(exp_dir: str, space) -> pd.DataFrame:
    from ray.tune import ExperimentAnalysis

    from cmisweep.sweep.tracking import error_message

    if "://" not in exp_dir:
        if not Path(exp_dir).exists():
            return pd.DataFrame(columns=["trial_id", "name", "status"])
        exp_dir = str(Path(exp_dir).resolve())
    analysis = ExperimentAnalysis(exp_dir)
    rows = []
    for trial in analysis.trials:
        point = point_from_config(space, trial.config)
        last = trial.last_result or {}
        status = last.get(STATUS)
        stopped_at = last.get(STOPPED_AT)
        if trial.status == TuneStatus.ERROR:
            status = TrialStatus.FAILED
        elif status is None:  # no final result: stopped by the scheduler at its last epoch, or not ended
            status = TrialStatus.STOPPED if trial.status == TuneStatus.TERMINATED else TrialStatus.UNFINISHED
            stopped_at = int(last.get("epoch", 0)) if status == TrialStatus.STOPPED else None
        row = {
            "trial_id": trial.trial_id, "name": point_name(point), "status": str(status),
            "error": error_message(trial) if status == TrialStatus.FAILED else None,
            "preset": point["preset"], "gamma": point["gamma"], "alpha": point.get("alpha"),
            "seed": point["seed"], "epochs_done": int(last.get("epoch", 0)),
            "stopped_at": None if stopped_at is None else int(stopped_at),
            "node_id": last.get(NODE), "gpu_ids": last.get(GPUS),
        }
        row.update({f"params.{k}": v for k, v in point.get("params", {}).items()})
        row.update({k: v for k, v in last.items() if k.startswith("final/")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["stopped_at"] = frame["stopped_at"].astype("Int64")
    return frame.sort_values(["preset", "gamma", "seed", "name"], kind="stable").reset_index(drop=True)
