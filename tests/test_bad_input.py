"""Bad input: one line naming the file, the key (or line) and what was expected; exit code 2; no
traceback; nothing written to results/ or MLflow."""
import gzip
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml

from cmisweep.cli import main
from cmisweep.configio import set_dotted
from conftest import ROOT
from helpers import tiny_space


def _space(**change) -> dict:
    data = tiny_space("bad")
    for key, value in change.items():
        set_dotted(data, key, value)
    return data


def _yaml(d) -> str:
    return yaml.safe_dump(d, sort_keys=False)


# (id, file text or space dict, extra CLI args, command, expected key, words the message must hold)
CASES = [
    ("empty file", "", [], "run", None, "file is empty"),
    ("not yaml", "name: x\nsearch: [1, 2\n", [], "run", "line 3", "not valid YAML"),
    ("python tag", "name: !!python/object/apply:os.system ['echo hi']\n", [], "run", "line 1", "not allowed"),
    ("top level list", "- a\n- b\n", [], "run", None, "expected a YAML mapping"),
    ("duplicate key", "name: a\nname: b\n", [], "run", "line 2", "duplicate key 'name'"),
    ("unknown top key", {**tiny_space("bad"), "serch": {}}, [], "run", "serch", "did you mean 'search'?"),
    ("unknown nested key", _space(**{"trial.train.epoch": 3}), [], "run", "trial.train.epoch", "did you mean 'epochs'?"),
    ("wrong type epochs", _space(**{"trial.train.epochs": "ten"}), [], "run", "trial.train.epochs", "valid integer"),
    ("wrong type gamma", _space(**{"search.gamma": "0.3"}), [], "run", "search.gamma", "expected"),
    ("negative epochs", _space(**{"trial.train.epochs": -2}), [], "run", "trial.train.epochs", "greater than or equal to 0"),
    ("batch zero", _space(**{"trial.train.batch_size": 0}), [], "run", "trial.train.batch_size", "greater than 0"),
    ("gamma above one", _space(**{"search.gamma": [0.5, 1.2]}), [], "run", "search.gamma", "allow_weights_above_one"),
    ("unknown dataset", _space(**{"trial.data.dataset": "cifar10"}), [], "run", "trial.data.dataset", "'mnist'"),
    ("unknown preset", _space(**{"search.presets": ["cmi", "factorvae"]}), [], "run", "search.presets[1]", "'cmi'"),
    ("m dropped not a bound", _space(**{"search.presets": ["cmi"], "search.gamma": [0.2], "search.alpha": [0.6],
                                        "trial.regularizer.m_term": "drop"}), [], "run", "search.alpha", "not a bound"),
    ("escaping name", _space(name="../../etc"), [], "run", "name", "directory under results/"),
    ("range on a grid", _space(**{"search.gamma": {"low": 0.0, "high": 0.5}}), [], "run", None, "tpe or nsga2"),
    ("range low above high", _space(**{"search.gamma": {"low": 0.5, "high": 0.1}}), [], "run", "search.gamma", "low < high"),
    ("nsga2 one objective", _space(algorithm={"kind": "nsga2", "num_samples": 2,
                                              "objectives": [{"metric": "final/aolr", "mode": "max"}]}),
     [], "run", "algorithm", "two or more objectives"),
    ("gpu fraction", _space(**{"resources.gpu": 2.5}), [], "run", "resources.gpu", "fraction"),
    ("missing data dir", _space(**{"trial.data.path": "/nonexistent/cmisweep-data"}), [], "run", "trial.data.path",
     "/nonexistent/cmisweep-data does not exist"),
    ("dry run missing data dir", _space(**{"trial.data.path": "/nonexistent/cmisweep-data"}), ["--dry-run"], "run",
     "trial.data.path", "/nonexistent/cmisweep-data does not exist"),
    ("dry run unreachable tracking", _space(tracking={"uri": "http://127.0.0.1:9"}), ["--dry-run"], "run",
     "tracking.uri", "unreachable"),
    ("infinite lr", _space(**{"trial.train.lr": float("inf")}), [], "run", "trial.train.lr", "finite number"),
    ("nan gamma", _space(**{"search.gamma": [0.3, float("nan")]}), [], "run", "search.gamma[1]", "finite number"),
    ("infinite range", _space(**{"search.gamma": {"low": 0.0, "high": float("inf")}}), [], "run",
     "search.gamma.high", "finite number"),
    ("nan param", _space(**{"search.params": {"train.lr": [1.0e-3, float("nan")]}}), [], "run",
     "search.params.train.lr[1]", "finite number"),
    ("infinite critic lr", {"regularizer": {"preset": "cmi", "knob": 0.3, "critic_lr": float("inf")}}, [], "train",
     "regularizer.critic_lr", "finite number"),
    ("repeated seeds", _space(**{"search.seeds": [0, 1, 0]}), [], "run", "search.seeds", "values repeat (0)"),
    ("repeated gamma", _space(**{"search.gamma": [0.3, 0.3]}), [], "run", "search.gamma", "values repeat (0.3)"),
    ("more cpus than the machine", _space(**{"resources.cpu": 4096}), [], "run", "resources.cpu", "this machine has"),
    ("unreachable tracking", _space(tracking={"uri": "http://127.0.0.1:9"}), [], "run", "tracking.uri", "unreachable"),
    ("bad tracking scheme", _space(tracking={"uri": "postgres-but-typo"}), [], "run", "tracking.uri", "expected sqlite:///"),
    ("bad override", _space(), ["--set", "trial.train.epochs"], "run", "trial.train.epochs", "key.path=value"),
    ("resume nothing", _space(), ["--resume"], "run", "name", "nothing to resume"),
    ("train unknown key", {"trian": {"epochs": 1}}, [], "train", "trian", "did you mean 'train'?"),
    ("train old knob name", {"regularizer": {"preset": "cmi", "gamma": 0.3}}, [], "train", "regularizer",
     "regularizer.gamma is now regularizer.knob"),
    ("train model mismatch", {"data": {"dataset": "mnist"}, "model": {"kind": "dsae"}}, [], "train", None,
     "model dsae is for speech data"),
    ("c bound on the dsae", {"data": {"dataset": "speech-synth"}, "regularizer": {"preset": "cmi", "knob": 0.3,
     "c_bound": "kl_z"}}, [], "train", None, "model dsae draws s given z: expected c_bound: none"),
]


def _write(tmp_path, content) -> str:
    p = tmp_path / "input.yaml"
    p.write_text(content if isinstance(content, str) else _yaml(content))
    return str(p)


def _check(capsys, tmp_path, code, file, key, words):
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # one line
    assert lines[0].startswith(f"error: {file}"), lines[0]
    if key is not None:
        assert f": {key}: " in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "results").exists()  # nothing written: no sweep dir, no MLflow store


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    _, content, extra, command, key, words = case
    monkeypatch.chdir(tmp_path)
    file = _write(tmp_path, content)
    code = main([command, file, *extra] + (["--results", str(tmp_path / "results")] if command == "run" else
                                           ["--out", str(tmp_path / "results" / "t")]))
    _check(capsys, tmp_path, code, file, key, words)


def _copy_fmnist(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_idx_file(damage, fmnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _copy_fmnist(fmnist_dir, tmp_path / "data" / "fashion-mnist")
    victim = d / "t10k-labels-idx1-ubyte.gz"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:2000])
    else:
        raw = bytearray(gzip.decompress(victim.read_bytes()))
        raw[500] ^= 0xFF
        victim.write_bytes(gzip.compress(bytes(raw)))
    file = _write(tmp_path, _space(**{"trial.data.path": str(d)}))
    code = main(["run", file, "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"error: {victim}" in err and ("truncated or corrupt" in err or "checksum mismatch" in err)
    assert not (tmp_path / "results").exists()


def test_bad_wav_in_a_speech_corpus(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for spk in range(6):
        (root / f"spk{spk}").mkdir(parents=True)
        for u in range(3):
            sf.write(root / f"spk{spk}" / f"u{u}.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    bad = root / "spk3" / "u1.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    space = _space(**{"trial.data": {"dataset": "speech-folder", "path": str(root)}, "trial.model": {"kind": "dsae"}})
    file = _write(tmp_path, space)
    code = main(["run", file, "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(bad) in err
    assert not (tmp_path / "results").exists()


def test_unreachable_tracking_uri_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["run", _write(tmp_path, _space()), "--tracking-uri", "http://127.0.0.1:9",
                 "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: --tracking-uri: MLflow server http://127.0.0.1:9 is unreachable")
    assert err.count("\n") == 1 and not (tmp_path / "results").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_unreachable_ray_cluster(how, tmp_path, capsys, monkeypatch):
    """A cluster the user named that does not answer: one line, exit 2, before anything starts."""
    monkeypatch.chdir(tmp_path)
    extra = ["--address", "127.0.0.1:9"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    code = main(["run", _write(tmp_path, _space()), *extra, "--results", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    name = "--address" if how == "flag" else "$RAY_ADDRESS"
    assert code == 2 and err.startswith(f"error: {name}: no Ray cluster answers at 127.0.0.1:9"), err
    assert err.count("\n") == 1 and not (tmp_path / "results").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_unreachable_s3_storage(dry_run, tmp_path, capsys, monkeypatch):
    """An S3 endpoint that does not answer: one line, exit 2, before any trial starts."""
    monkeypatch.chdir(tmp_path)
    for k, v in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    uri = "s3://sweeps/cmisweep?endpoint_override=127.0.0.1:9&scheme=http"
    code = main(["run", _write(tmp_path, _space()), "--storage", uri, "--results", str(tmp_path / "results")]
                + (["--dry-run", "--no-measure"] if dry_run else []))
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith(f"error: --storage: storage {uri} is unreachable"), err
    assert err.count("\n") == 1 and not (tmp_path / "results").exists() and "plan" not in out


def test_cluster_yaml_missing_fields(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text())
    del config["cluster_name"]
    p = tmp_path / "cluster.yaml"
    p.write_text(_yaml(config))
    code = main(["cluster", "check", str(p)])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip() == f"error: {p}: cluster_name: required key is missing"


def test_trial_config_file_that_does_not_exist(tmp_path, capsys):
    code = main(["train", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip() == f"error: {tmp_path / 'nope.yaml'}: file not found"

