"""The copy of Tune's experiment state (cmisweep.sweep.state_backup), on files laid out as Tune lays
them out: the driver's copy of the experiment directory, and the experiment directory that a kill
during Tune's upload left with empty files."""
import json
import pickle
from types import SimpleNamespace

from cmisweep.sweep.state_backup import StateBackup, repair


def _state(d, version):
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps({"version": version}))
    (d / "searcher.pkl").write_bytes(pickle.dumps({"version": version}))


def _versions(d):
    return json.loads((d / "state.json").read_text())["version"], pickle.loads((d / "searcher.pkl").read_bytes())["version"]


def test_the_copy_follows_the_drivers_files_after_every_result(tmp_path):
    driver, backup = tmp_path / "driver", tmp_path / "tune-state"
    _state(driver, 1)
    (driver / ".tmp-searcher.pkl").write_bytes(b"")  # Tune's temporary file and trial dirs: not state
    (driver / "trial_0").mkdir()
    trials = [SimpleNamespace(local_experiment_path=str(driver))]
    cb = StateBackup(backup)
    cb.on_trial_result(0, trials, trials[0], {})
    assert _versions(backup) == (1, 1) and sorted(p.name for p in backup.iterdir()) == ["searcher.pkl", "state.json"]
    _state(driver, 2)
    cb.on_trial_complete(1, trials, trials[0])
    assert _versions(backup) == (2, 2)
    assert not backup.with_name("tune-state.new").exists() and not backup.with_name("tune-state.old").exists()


def test_repair_puts_the_last_whole_copy_back(tmp_path):
    exp, backup = tmp_path / "tune", tmp_path / "tune-state"
    _state(exp, 1)
    (exp / "tuner.pkl").write_bytes(pickle.dumps("written once, at the start"))
    _state(backup, 1)
    assert not repair(str(exp), backup)  # whole: left alone
    _state(exp, 2)
    (exp / "searcher.pkl").write_bytes(b"")  # killed during the upload
    (exp / "state.json").write_text('{"version": 2, "tri')
    assert repair(str(exp), backup)
    assert _versions(exp) == (1, 1) and (exp / "tuner.pkl").is_file()
    backup.rename(backup.with_name("tune-state.old"))  # killed between the backup's two renames
    (exp / "state.json").write_bytes(b"")
    assert repair(str(exp), backup) and _versions(exp) == (1, 1)
