"""A consistent copy of Ray Tune's experiment state, so that a driver killed at any moment resumes.

Tune writes its state (trial list, searcher, search generator) into a local staging directory in
the driver's thread, then uploads it to the experiment directory with a multi-threaded, non-atomic
copy. A SIGKILL during that copy leaves empty or truncated files there (seen: all of them 0 bytes),
and `--resume` then fails or restarts the searcher without its search space. The callback below
copies the staging files, which are complete whenever a callback runs (same thread), into
results/<sweep>/tune-state/ after every result; `repair` puts that copy back when the experiment
directory's state does not load. Local storage only: object stores (S3) write each object whole.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from ray import tune

PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "tuner.pkl")


def _state_files(directory: Path) -> list[Path]:
    return sorted(f for pattern in PATTERNS for f in directory.glob(pattern))


def _loads(path: Path) -> bool:
    """Whether a state file loads: JSON (the trial list) or a pickle (Tune pickles the search
    generator's state into a .json file too)."""
    data = path.read_bytes()
    if not data:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        import ray.cloudpickle  # noqa: F401 - what Tune pickled with

        pickle.loads(data)
        return True
    except Exception:  # noqa: BLE001 - any failure to load means a broken copy
        return False


class StateBackup(tune.Callback):
    def __init__(self, backup_dir: Path):
        self.backup_dir = Path(backup_dir)

    def _save(self, trials) -> None:
        if not trials:
            return
        staging = Path(trials[0].storage.experiment_driver_staging_path)
        files = _state_files(staging)
        if not any(f.name.startswith("experiment_state-") for f in files):
            return
        new = self.backup_dir.with_name(self.backup_dir.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, new / f.name)
        old = self.backup_dir.with_name(self.backup_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.backup_dir.exists():
            os.replace(self.backup_dir, old)
        os.replace(new, self.backup_dir)
        shutil.rmtree(old, ignore_errors=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._save(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._save(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._save(trials)


def repair(exp_dir: str, backup_dir: Path) -> bool:
    """If the experiment directory's state files do not all load, replace them with the backup
    (the last complete copy; a crash between the backup's two renames leaves it as .old). Returns
    whether it repaired."""
    exp = Path(exp_dir)
    if "://" in exp_dir or not exp.is_dir():
        return False
    files = _state_files(exp)
    if files and all(_loads(f) for f in files):
        return False
    backup_dir = Path(backup_dir)
    source = next((d for d in (backup_dir, backup_dir.with_name(backup_dir.name + ".old")) if d.is_dir()
                   and _state_files(d) and all(_loads(f) for f in _state_files(d))), None)
    if source is None:
        return False
    keep = {"tuner.pkl"} - {f.name for f in _state_files(source)}  # written once at the start, not staged
    for f in files:
        if f.name not in keep or not _loads(f):
            f.unlink()
    for f in _state_files(source):
        shutil.copy2(f, exp / f.name)
    return True
