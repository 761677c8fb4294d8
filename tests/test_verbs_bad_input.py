"""Every verb refuses bad input the way `cmisweep run` does (tests/test_bad_input.py): one line on
stderr naming the argument or file and what was expected, exit code 2, no traceback, nothing
written. In-process through cmisweep.cli.main: no Ray, and the models are built, not trained."""
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import cmisweep
from cmisweep.cli import main
from cmisweep.config import TrialConfig
from cmisweep.errors import CmisweepError
from cmisweep.models import build_model
from cmisweep.saved import save_model
from conftest import ROOT
from helpers import synthetic_images, tiny_trial

STUDY = ROOT / "results" / "studies" / "fmnist-cpu-study"
RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> types.SimpleNamespace:
    """An image model, a speech model (both untrained: only their kind matters here), a trial
    config and a genuine checkpoint of it, written once for the module."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    image_cfg = TrialConfig.model_validate(tiny_trial(evaluation={"enabled": False}))
    save_model(build_model(image_cfg.model, (1, 28, 28)), image_cfg, types.SimpleNamespace(), root / "image")
    speech_cfg = TrialConfig.model_validate({
        "data": {"dataset": "speech-folder", "path": str(root / "corpus"), "segment_frames": 20},
        "model": {"kind": "dsae", "z_dim": 8, "s_dim": 8, "hidden": 16}})
    norm = types.SimpleNamespace(feature_mean=torch.zeros(201), feature_std=torch.ones(201))
    save_model(build_model(speech_cfg.model, (20, 201)), speech_cfg, norm, root / "speech")
    from cmisweep.trial import build_trainer

    x, _ = synthetic_images(60)
    trainer, _ = build_trainer(image_cfg, data=types.SimpleNamespace(train_x=x.float(), val_x=x[:20].float()))
    trainer.save(root / "checkpoint.pt")
    config = root / "trial.yaml"
    config.write_text(yaml.safe_dump(tiny_trial(evaluation={"enabled": False})))
    rng = np.random.default_rng(0)
    for name, n in (("a.wav", 16000), ("b.wav", 8000)):
        sf.write(root / name, rng.normal(0, 0.1, n).astype(np.float32), 16000)
    (root / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return types.SimpleNamespace(root=root, image=root / "image", speech=root / "speech", config=config,
                                 checkpoint=root / "checkpoint.pt", a=root / "a.wav", b=root / "b.wav",
                                 junk=root / "junk.wav")


def _refused(capsys, code, *names, words=None) -> str:
    """Exit code 2 and exactly one line on stderr that names each of `names`; returns the line."""
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    for name in names:
        assert str(name) in lines[0], lines[0]
    if words is not None:
        assert words in lines[0], lines[0]
    return lines[0]


def _snapshot(d: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- cmisweep sample ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ["0", "-3", "101", "100000", "ten", "2.5"])
def test_sample_n_out_of_range_or_not_a_number(n, models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["sample", str(models.image), "--n", n, "--out", str(tmp_path / "grid.png")])
    _refused(capsys, code, "--n", repr(n), words="from 1 to 100")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing dir", "not a model", "a file", "unknown run id", "unknown run in a store"])
def test_sample_model_that_does_not_exist(where, models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store" / "mlflow.db"
    run = {"missing dir": str(tmp_path / "nope"), "not a model": str(models.root), "a file": str(models.a),
           "unknown run id": RUN_ID, "unknown run in a store": RUN_ID}[where]
    if where == "unknown run in a store":
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{store}").search_experiments()  # an existing, empty store
        capsys.readouterr()
    before = _snapshot(tmp_path)
    code = main(["sample", run, "--out", str(tmp_path / "grid.png"), "--tracking-uri", f"sqlite:///{store}"])
    _refused(capsys, code, run)
    assert _snapshot(tmp_path) == before  # no grid, and no MLflow store made by asking it


def test_sample_of_a_speech_model(models, tmp_path, capsys):
    code = main(["sample", str(models.speech), "--out", str(tmp_path / "grid.png")])
    _refused(capsys, code, models.speech, words="sample is for image models")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["parent is a file", "proc", "a directory"])
def test_sample_out_that_cannot_be_written(where, models, tmp_path, capsys):
    out = {"parent is a file": models.a / "grid.png", "proc": Path("/proc/cmisweep-no/grid.png"),
           "a directory": tmp_path}[where]
    code = main(["sample", str(models.image), "--out", str(out)])
    _refused(capsys, code, "--out", out)
    assert list(tmp_path.iterdir()) == []


def test_sample_data_dir_that_does_not_exist(models, tmp_path, capsys):
    code = main(["sample", str(models.image), "--out", str(tmp_path / "g.png"), "--data", str(tmp_path / "nodata")])
    _refused(capsys, code, "--data", tmp_path / "nodata")
    assert list(tmp_path.iterdir()) == []


# --- cmisweep convert -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing source", "missing target", "directory target", "junk target",
                                  "text file target", "image model", "out not wav", "out in a file",
                                  "iterations zero", "iterations word", "missing model"])
def test_convert_bad_input(case, models, tmp_path, capsys):
    out = tmp_path / "conv.wav"
    run, src, tgt, extra = str(models.speech), str(models.a), str(models.b), []
    named: list = []
    if case == "missing source":
        src = str(tmp_path / "none.wav")
        named = ["SOURCE", src]
    elif case == "missing target":
        tgt = str(tmp_path / "none.wav")
        named = ["TARGET", tgt]
    elif case == "directory target":
        tgt = str(models.root)
        named = ["TARGET", tgt]
    elif case == "junk target":
        tgt = str(models.junk)
        named = [tgt]
    elif case == "text file target":
        tgt = str(models.config)
        named = [tgt]
    elif case == "image model":
        run = str(models.image)
        named = [run, "convert is for speech models"]
    elif case == "out not wav":
        out = tmp_path / "conv.png"
        named = ["--out", out, ".wav"]
    elif case == "out in a file":
        out = models.a / "conv.wav"
        named = ["--out", out]
    elif case == "iterations zero":
        extra, named = ["--iterations", "0"], ["--iterations", "from 1 to 1000"]
    elif case == "iterations word":
        extra, named = ["--iterations", "many"], ["--iterations", "from 1 to 1000"]
    elif case == "missing model":
        run = str(tmp_path / "no-model")
        named = [run]
    before = _snapshot(models.root)
    code = main(["convert", run, src, tgt, "--out", str(out), *extra])
    _refused(capsys, code, *named)
    assert list(tmp_path.iterdir()) == []
    assert _snapshot(models.root) == before


# --- cmisweep.load from Python --------------------------------------------------------------------

@pytest.mark.parametrize("case", ["not a model", "missing dir", "unknown run id", "unknown runs uri",
                                  "damaged weights", "no config"])
def test_load_refuses_with_one_clear_cmisweep_error(case, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'nostore.db'}"
    where, named = {"not a model": (models.root, models.root), "missing dir": (tmp_path / "x", tmp_path / "x"),
                    "unknown run id": (RUN_ID, RUN_ID), "unknown runs uri": (f"runs:/{RUN_ID}/model", RUN_ID),
                    "damaged weights": (None, "model.pth"), "no config": (None, "trial.yaml")}[case]
    if where is None:
        where = tmp_path / "damaged"
        shutil.copytree(models.image, where)
        if case == "damaged weights":
            (where / "model" / "data" / "model.pth").write_bytes(b"garbage")
            named = where / "model"
        else:
            (where / "model" / "extra_files" / "trial.yaml").unlink()
            named = where / "model" / "extra_files" / "trial.yaml"
    before = _snapshot(tmp_path)
    with pytest.raises(CmisweepError) as e:
        cmisweep.load(where, store)
    assert e.value.exit_code == 2
    message = str(e.value)
    assert "\n" not in message and str(named) in message, message
    assert _snapshot(tmp_path) == before  # no store created at nostore.db, nothing under ./results


# --- cmisweep report ------------------------------------------------------------------------------

def _sweep(tmp_path) -> Path:
    d = tmp_path / "sweep"
    d.mkdir()
    for f in ("space.yaml", "trials.parquet"):
        shutil.copy(STUDY / f, d / f)
    return d


@pytest.mark.parametrize("case", ["no such sweep", "truncated parquet", "text as parquet", "invalid space",
                                  "space not yaml", "unknown preset"])
def test_report_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _sweep(tmp_path)
    sweep, extra = str(d), []
    if case == "no such sweep":
        sweep, named = "nosuch", ["SWEEP", tmp_path / "results" / "nosuch"]
    elif case == "truncated parquet":
        (d / "trials.parquet").write_bytes((d / "trials.parquet").read_bytes()[:300])
        named = [d / "trials.parquet"]
    elif case == "text as parquet":
        (d / "trials.parquet").write_text("name: x\n")
        named = [d / "trials.parquet"]
    elif case == "invalid space":
        text = (d / "space.yaml").read_text()
        (d / "space.yaml").write_text(text.replace("concurrency: 2\n", "concurrency: -4\n"))
        named = [d / "space.yaml", "concurrency"]
    elif case == "space not yaml":
        (d / "space.yaml").write_text((d / "space.yaml").read_text() + "search: [1\n")
        named = [d / "space.yaml", "not valid YAML"]
    else:
        extra, named = ["--against", str(STUDY), "--presets", "cmi", "factorvae"], ["--presets", "factorvae"]
    before = _snapshot(tmp_path)
    code = main(["report", sweep, "--results", str(tmp_path / "results"), *extra])
    _refused(capsys, code, *named)
    assert _snapshot(tmp_path) == before  # no reports/, no frontier.parquet


# --- cmisweep train -------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", ["-1", "ten", "1.5"])
def test_train_epochs_out_of_range(epochs, models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", str(models.config), "--epochs", epochs, "--out", str(tmp_path / "t")])
    _refused(capsys, code, "--epochs", repr(epochs))
    assert list(tmp_path.iterdir()) == []


def test_train_config_that_fails_validation(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(tiny_trial(model={"layers": 1})))
    code = main(["train", str(p), "--out", str(tmp_path / "t")])
    _refused(capsys, code, p, "model.layers")
    assert [f.name for f in tmp_path.iterdir()] == ["bad.yaml"]


def test_train_out_that_cannot_be_written(models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = models.a / "t"
    code = main(["train", str(models.config), "--out", str(out), "--results", str(tmp_path / "results")])
    _refused(capsys, code, "--out", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "not a checkpoint", "no format"])
def test_train_resume_from_a_damaged_checkpoint(damage, models, tmp_path, capsys, monkeypatch):
    """The damaged checkpoint is named, and left as it was for the user to inspect: no training
    starts (it would overwrite it after the first epoch), nothing else is written."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "t"
    out.mkdir()
    ckpt = out / "checkpoint.pt"
    good = models.checkpoint.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "text":
        ckpt.write_text("hello\n")
    elif damage == "not a checkpoint":
        torch.save(torch.zeros(3), ckpt)
    else:
        torch.save({"epoch": 1, "model": {}}, ckpt)
    before = ckpt.read_bytes()
    code = main(["train", str(models.config), "--resume", "--out", str(out), "--results", str(tmp_path / "results")])
    _refused(capsys, code, ckpt)
    assert ckpt.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["t"] and [f.name for f in out.iterdir()] == ["checkpoint.pt"]


def test_train_resume_from_another_models_checkpoint(models, fmnist_dir, tmp_path, capsys, monkeypatch):
    """A readable checkpoint of another config (maps 16, not 8) fails when it meets the model:
    after the data load, before any training, and still one line naming the file."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "t"
    out.mkdir()
    other = TrialConfig.model_validate(tiny_trial(model={"maps": 16}))
    from cmisweep.trial import build_trainer

    x, _ = synthetic_images(60)
    trainer, _ = build_trainer(other, data=types.SimpleNamespace(train_x=x.float(), val_x=x[:20].float()))
    trainer.save(out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    code = main(["train", str(models.config), "--resume", "--out", str(out), "--results", str(tmp_path / "results")])
    _refused(capsys, code, out / "checkpoint.pt", words="another model")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["t"] and [f.name for f in out.iterdir()] == ["checkpoint.pt"]


# --- cmisweep ui, data fetch, data synth-speech ---------------------------------------------------

@pytest.mark.parametrize("argv, named", [
    (["ui", "--port", "70000"], "--port"),
    (["ui", "--port", "0"], "--port"),
    (["ui", "--port", "http"], "--port"),
    (["data", "fetch", "cifar10"], "datasets"),
    (["data", "synth-speech", "--speakers", "0"], "--speakers"),
    (["data", "synth-speech", "--utterances", "-1"], "--utterances"),
    (["data", "synth-speech", "--test-fraction", "1.5"], "--test-fraction"),
    (["data", "synth-speech", "--test-fraction", "nan"], "--test-fraction"),
    (["data", "synth-speech", "--workers", "0"], "--workers"),
    (["sample"], "run"),
    ([], "command"),
])
def test_arguments_out_of_range(argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    line = _refused(capsys, code, named)
    assert "--help" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["data", "fetch", "mnist", "--dest"], ["data", "synth-speech", "--out"]])
def test_data_dir_that_is_a_file(command, models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([*command, str(models.a)])
    _refused(capsys, code, command[-1], models.a)
    assert list(tmp_path.iterdir()) == []
