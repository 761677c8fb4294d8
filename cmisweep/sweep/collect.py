"""A sweep's trials and their per-epoch history, read from Ray Tune's experiment state: the one
place that does (the reports read the frames it returns, never Tune's state)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmisweep.files import atomic_write
from cmisweep.status import EVALUATED, TrialStatus, TuneStatus
from cmisweep.sweep.search import resolve
from cmisweep.sweep.trainable import CPU_BF16, CPU_MODEL, DEVICE, ERROR, GPUS, NODE, PRECISION, STATUS, STOPPED_AT

# non-metric fields a trial's last result carries into trials.parquet: the machine it ran on and
# its resolved precision (bf16 kernels give different numbers on different CPUs)
RECORDED = {"cpu_model": CPU_MODEL, "cpu_bf16": CPU_BF16, "precision": PRECISION, "device": DEVICE}
EMPTY = pd.DataFrame(columns=["trial_id", "name", "status"])


def _analysis(exp_dir: str):
    from ray.tune import ExperimentAnalysis

    if "://" not in exp_dir:
        if not Path(exp_dir).exists():
            return None
        exp_dir = str(Path(exp_dir).resolve())
    return ExperimentAnalysis(exp_dir)


def collect_trials(exp_dir: str, space) -> pd.DataFrame:
    analysis = _analysis(exp_dir)
    if analysis is None:
        return EMPTY.copy()
    rows = []
    for trial in analysis.trials:
        # the name Tune and MLflow gave the trial: a sampled trial's carries its id
        resolved = resolve(space, trial.config, trial.trial_id)
        point = resolved.point
        last = trial.last_result or {}
        status = last.get(STATUS)
        stopped_at = last.get(STOPPED_AT)
        if trial.status == TuneStatus.ERROR:
            status = TrialStatus.FAILED
        elif status is None:  # no final result: stopped by the scheduler at its last epoch, or not ended
            status = TrialStatus.STOPPED if trial.status == TuneStatus.TERMINATED else TrialStatus.UNFINISHED
            stopped_at = int(last.get("epoch", 0)) if status == TrialStatus.STOPPED else None
        row = {
            "trial_id": trial.trial_id, "name": resolved.name, "status": str(status),
            "error": error_message(trial) if status == TrialStatus.FAILED else None,
            "preset": point["preset"], "gamma": point["gamma"], "alpha": point.get("alpha"),
            "seed": point["seed"], "epochs_done": int(last.get("epoch", 0)),
            "stopped_at": None if stopped_at is None else int(stopped_at),
            "node_id": last.get(NODE), "gpu_ids": last.get(GPUS),
        }
        row.update({column: last.get(key) for column, key in RECORDED.items()})
        row.update({f"params.{k}": v for k, v in point.get("params", {}).items()})
        row.update({k: v for k, v in last.items() if k.startswith("final/")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["stopped_at"] = frame["stopped_at"].astype("Int64")
    return frame.sort_values(["preset", "gamma", "seed", "name"], kind="stable").reset_index(drop=True)


def collect_models(exp_dir: str, space, dest: Path) -> list[str]:
    """Copy each evaluated trial's kept model from its last checkpoint (on a cluster: shared
    storage) to dest/<trial name>.pt, skipping those already there; the names copied. A trial whose
    checkpoint has none (trained before models were kept) is left out."""
    import shutil

    from cmisweep.kept_model import SUFFIX
    from cmisweep.sweep.trainable import KEPT_FILE

    analysis = _analysis(exp_dir)
    copied = []
    for trial in analysis.trials if analysis is not None else []:
        name = resolve(space, trial.config, trial.trial_id).name
        target = dest / f"{name}{SUFFIX}"
        if target.exists() or (trial.last_result or {}).get(STATUS) not in {str(s) for s in EVALUATED}:
            continue
        checkpoint = analysis.get_last_checkpoint(trial)
        if checkpoint is None:
            continue
        with checkpoint.as_directory() as d:
            if (Path(d) / KEPT_FILE).is_file():
                atomic_write(target, lambda tmp, src=Path(d) / KEPT_FILE: shutil.copyfile(src, tmp))
                copied.append(name)
    return copied


def collect_epochs(exp_dir: str, space) -> pd.DataFrame:
    """One row per trial and epoch: the per-epoch results (train/..., val/...) Tune kept, so that
    a committed sweep's history (KL(z) curves, early-stopping replays) needs no Tune state."""
    analysis = _analysis(exp_dir)
    frames = []
    for trial in analysis.trials if analysis is not None else []:
        df = analysis.trial_dataframes.get(trial.trial_id)
        if df is None or df.empty or "epoch" not in df:
            continue
        keep = ["epoch"] + [c for c in df.columns if c.startswith(("train/", "val/", "time/"))]
        df = df[df["epoch"].notna()][keep].dropna(how="all", subset=keep[1:])  # the final result is no epoch
        df = df.drop_duplicates("epoch", keep="last").copy()
        df.insert(0, "name", resolve(space, trial.config, trial.trial_id).name)
        df.insert(0, "trial_id", trial.trial_id)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["trial_id", "name", "epoch"])
    out = pd.concat(frames, ignore_index=True)
    out["epoch"] = out["epoch"].astype(int)
    return out.sort_values(["name", "epoch"], kind="stable").reset_index(drop=True)


def error_message(trial) -> str:
    """The last line of a trial's error (its exception and message)."""
    last = trial.last_result or {}
    if last.get(ERROR):
        return str(last[ERROR])
    # pydantic ends its errors with a link to its docs: the line before says what was wrong
    lines = [ln for ln in str(_error_text(trial) or "").splitlines()
             if ln.strip() and not ln.strip().startswith("For further information visit")]
    return lines[-1].strip() if lines else "trial failed (no error recorded)"


def _error_text(trial) -> str | None:
    """Tune's error file of a trial: the driver's copy while Tune runs (a callback sees it before
    Tune uploads it), else the one in the trial's storage (cmisweep report, without a running Ray;
    storage may be shared: S3)."""
    try:
        local = trial.error_file
        if local and Path(local).is_file():
            return Path(local).read_text(errors="replace")
    except Exception:  # noqa: BLE001 - a trial read back from storage has no driver's copy
        pass
    try:
        return trial.get_error()
    except Exception:  # noqa: BLE001 - a missing error file must not hide the other trials
        return None
