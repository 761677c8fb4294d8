"""A whole copy of Ray Tune's experiment state, so that a driver killed at any moment resumes.

Tune saves its state (trial list, searcher) in the driver, into the driver's copy of the experiment
directory (`Trial.local_experiment_path`, where Tune's own loggers write too), then uploads it into
the experiment directory (the storage_path/name the runner gives Tune) from a background thread,
with a non-atomic copy. A SIGKILL during that copy leaves empty or truncated files there (seen: all
of them 0 bytes), and `--resume` then fails or restarts the searcher without its search space.

The callback below copies the driver's files (the top level: the trial directories hold
checkpoints, which Tune keeps itself) into results/<sweep>/tune-state/ after every result. They are
whole whenever a callback runs: Tune writes them (each through a rename) in the thread that runs
the callbacks, while an upload, in another thread, only reads them; a copy of the experiment
directory instead could be taken halfway through an upload. `repair` puts the copy back when the
experiment directory's files do not all load. Local storage only: object stores (S3) write each
object whole.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from ray import tune


def _files(directory: Path) -> list[str]:
    """The directory's top-level files, hidden ones (Tune's markers and temporary files) left out."""
    return sorted(e.name for e in os.scandir(directory) if not e.name.startswith(".") and e.is_file())


def _loads(path: Path) -> bool:
    """Whether a state file loads: JSON, or a pickle (Tune pickles some state into .json files
    too). A truncated file fails both."""
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
    """After every result, a copy of the driver's experiment state files in backup_dir, replaced
    whole (a new directory, then two renames)."""

    def __init__(self, backup_dir: Path):
        self.backup_dir = Path(backup_dir)

    def _save(self, trials) -> None:
        if not trials:
            return
        staging = Path(trials[0].local_experiment_path)
        if not staging.is_dir():
            return
        files = _files(staging)
        if not files:
            return
        new = self.backup_dir.with_name(self.backup_dir.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        for name in files:
            shutil.copy2(staging / name, new / name)
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
    """If the experiment directory's files do not all load, put the backup's back (the last whole
    copy; a crash between the backup's two renames leaves it as .old). Returns whether it repaired."""
    exp = Path(exp_dir)
    if "://" in exp_dir or not exp.is_dir():
        return False
    names = _files(exp)
    if names and all(_loads(exp / n) for n in names):
        return False
    backup_dir = Path(backup_dir)
    source = next((d for d in (backup_dir, backup_dir.with_name(backup_dir.name + ".old"))
                   if d.is_dir() and _files(d) and all(_loads(d / n) for n in _files(d))), None)
    if source is None:
        return False
    # a broken file goes; a whole one the backup lacks stays (what Tune writes straight into the
    # experiment directory once, at the start, rather than through the driver's copy)
    for name in names:
        if not _loads(exp / name):
            (exp / name).unlink()
    for name in _files(source):
        shutil.copy2(source / name, exp / name)
    return True
