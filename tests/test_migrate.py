"""Stored files of an older format load through cmisweep.migrate (the one place that knows the old
names) to today's config; the same files given as user input are refused with today's names.
The old files are committed under tests/fixtures/old-format/."""
import pytest

from cmisweep import configio, migrate
from cmisweep.config import TrialConfig
from cmisweep.errors import ConfigError
from cmisweep.sweep.space import SearchSpace, grid_points, load_space
from conftest import ROOT

OLD = ROOT / "tests" / "fixtures" / "old-format"


def today(raw: dict) -> dict:
    """The old trial config as today's version writes it: the knob under its new name."""
    reg = dict(raw["regularizer"])
    reg["knob"] = reg.pop("gamma")
    return {**raw, "regularizer": reg}


def test_an_old_trial_config_is_migrated_to_todays():
    raw = configio.read_yaml(OLD / "trial.yaml")
    assert raw["regularizer"]["gamma"] == 0.3  # the fixture is of the old format
    cfg = TrialConfig.model_validate(migrate.current(raw, "trial"))
    assert cfg == TrialConfig.model_validate(today(raw))
    assert (cfg.regularizer.preset, cfg.regularizer.knob) == ("beta", 0.3)
    assert "gamma" in raw["regularizer"]  # a copy: the caller's mapping is untouched
    with pytest.raises(ConfigError, match="regularizer.gamma is now regularizer.knob"):
        configio.validate(TrialConfig, raw, OLD / "trial.yaml")  # as a user's file: refused


def test_an_old_stored_space_is_migrated_to_todays():
    raw = configio.read_yaml(OLD / "space.yaml")
    assert "gamma" in raw["trial"]["regularizer"]
    space = load_space(OLD / "space.yaml", stored=True)  # --resume and report read it so
    assert space == SearchSpace.model_validate({**raw, "trial": today(raw["trial"])})
    assert space.trial.regularizer.knob == 0.0 and len(grid_points(space)) == 3  # vanilla once, beta, cmi
    with pytest.raises(ConfigError, match="regularizer.gamma is now regularizer.knob"):
        load_space(OLD / "space.yaml")  # as a user's file: refused


def test_an_old_saved_models_config_is_migrated_to_todays(tmp_path):
    """A model directory whose config was written in the old names loads with cmisweep.load."""
    from cmisweep.models import build_model
    from cmisweep.saved import CONFIG_FILE, load, save_model

    raw = configio.read_yaml(OLD / "trial.yaml")
    cfg = TrialConfig.model_validate(migrate.current(raw, "trial"))
    path = save_model(build_model(cfg.model, (1, 28, 28)), cfg, None, tmp_path)
    (path / "extra_files" / CONFIG_FILE).write_text((OLD / "trial.yaml").read_text())
    _, loaded = load(tmp_path)
    assert loaded == cfg


def test_an_old_key_beside_its_new_one_is_not_guessed():
    raw = {"regularizer": {"preset": "cmi", "gamma": 0.3, "knob": 0.5}}
    assert migrate.current(raw, "trial") == raw
    with pytest.raises(ValueError, match="regularizer.gamma is now regularizer.knob"):
        TrialConfig.model_validate(migrate.current(raw, "trial"))

