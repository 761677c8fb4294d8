"""A trained model as an MLflow model, and back (docs/design.md section 6).

Every finished trial, `cmisweep train` and a sweep's alike, writes its best-epoch model as an MLflow
model (the mlflow.pytorch flavor) under `model/` among its artifacts, so that both

    mlflow.pytorch.load_model("runs:/<run_id>/model")
    cmisweep.load(run_id_or_dir)  ->  (model, TrialConfig)

work. The model carries what using it needs: its resolved config (extra file trial.yaml) and, for
speech, the feature normalization of its training split as buffers `feature_mean` / `feature_std`
(also the extra file normalization.json), so that features of new audio can be normalized the way
the model saw its training data.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from cmisweep import migrate
from cmisweep.config import TrialConfig
from cmisweep.errors import DataError

# MLflow copies a model's extra files and downloads a run's model with a progress bar: noise in a
# trial's log and a command's one line of output
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODEL_DIR = "model"  # artifact path of the model in a run: runs:/<run_id>/model
CONFIG_FILE = "trial.yaml"
NORMALIZATION_FILE = "normalization.json"


def save_model(model: torch.nn.Module, cfg: TrialConfig, data, out_dir: Path) -> Path:
    """Write the model (a CPU fp32 copy, in eval mode) as an MLflow model at out_dir/model."""
    import mlflow.pytorch

    path = Path(out_dir) / MODEL_DIR
    model = copy.deepcopy(model).float().cpu().eval()
    with tempfile.TemporaryDirectory(prefix="cmisweep-model-") as d:
        extra = [Path(d) / CONFIG_FILE]
        extra[0].write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        mean, std = getattr(data, "feature_mean", None), getattr(data, "feature_std", None)
        if mean is not None:
            model.register_buffer("feature_mean", mean.detach().float().cpu().clone())
            model.register_buffer("feature_std", std.detach().float().cpu().clone())
            extra.append(Path(d) / NORMALIZATION_FILE)
            extra[1].write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
        # pickled, not pt2: pt2 traces one forward() call, and these models are used through
        # encode / generate / convert. Requirements named, not inferred (inference imports and
        # probes the environment for seconds). Written aside, then moved: never a half model.
        staged = Path(d) / MODEL_DIR
        # its warning about pickles is the reason above, said on every trial: once here is enough
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        mlflow.pytorch.save_model(model, str(staged), extra_files=[str(p) for p in extra],
                                  pip_requirements=[f"torch=={_torch_version()}", "cmisweep"], serialization_format="pickle")
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(path))
    return path


def _model_dir(where: Path) -> Path | None:
    for d in (where, where / MODEL_DIR, where / "artifacts" / MODEL_DIR):
        if (d / "MLmodel").is_file():
            return d
    return None


def _tracking_uri(tracking_uri: str | None) -> str:
    from cmisweep.tracking_uri import tracking_uri as rule

    return rule(tracking_uri).uri


def _looks_like_path(s: str) -> bool:
    """A string a user meant as a directory: run ids are hex and runs:/ URIs have a scheme."""
    return not s.startswith("runs:/") and (os.sep in s or s.startswith((".", "~")))


def model_path(run_or_dir: str | Path, tracking_uri: str | None = None) -> Path:
    """The local directory of a saved model: a directory (a model, a `cmisweep train --out` dir) as
    is, or a run id / runs:/ URI downloaded from the tracking store."""
    where = Path(run_or_dir).expanduser()
    if where.exists():
        found = _model_dir(where)
        if found is None:
            raise DataError(f"{where}: no MLflow model here (expected {where}/MLmodel or {where}/{MODEL_DIR}/MLmodel)")
        return found
    if isinstance(run_or_dir, Path) or _looks_like_path(str(run_or_dir)):
        raise DataError(f"{run_or_dir}: no such directory (expected a model directory, an MLflow run id or "
                        f"runs:/<run_id>/{MODEL_DIR})")
    import mlflow
    from mlflow.exceptions import MlflowException

    store = _tracking_uri(tracking_uri)
    uri = str(run_or_dir) if str(run_or_dir).startswith("runs:/") else f"runs:/{run_or_dir}/{MODEL_DIR}"
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        # asking MLflow would create an empty store there (and log its schema migration)
        raise DataError(f"{run_or_dir}: not a model directory, and there is no MLflow store at {store} to find "
                        "the run in (pass --tracking-uri, or set MLFLOW_TRACKING_URI)")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store))
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{run_or_dir}: not a model directory, and no model at {uri} in "
                            f"{store} ({first})") from None


def load(run_or_dir: str | Path, tracking_uri: str | None = None) -> tuple[torch.nn.Module, TrialConfig]:
    """(model in eval mode on the CPU, its TrialConfig) from a run id, a runs:/ URI, a directory or
    a sweep's kept model (results/<sweep>/models/<trial>.pt, cmisweep.kept_model)."""
    import mlflow.pytorch

    if Path(run_or_dir).expanduser().is_file():
        from cmisweep.kept_model import load_kept

        return load_kept(Path(run_or_dir).expanduser())

    path = model_path(run_or_dir, tracking_uri)
    # the config first: validating it imports a plug-in model's code (or names what is missing),
    # which unpickling the model then needs
    config = path / "extra_files" / CONFIG_FILE
    try:
        raw = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{config}: the model's config is missing or unreadable ({_first_line(e)})") from None
    try:
        cfg = TrialConfig.model_validate(migrate.current(raw, "trial"))  # saved by an older version too
    except ValueError as e:  # pydantic's ValidationError: the key and what was expected, on one line
        from pydantic import ValidationError

        from cmisweep.configio import format_validation_error

        why = ": ".join(x for x in format_validation_error(e, TrialConfig) if x) \
            if isinstance(e, ValidationError) else _first_line(e)
        raise DataError(f"{config}: not a valid trial config ({why})") from None
    try:
        model = mlflow.pytorch.load_model(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - a damaged model raises anything from MLflow's or torch's depths
        raise DataError(f"{path}: damaged MLflow model, it does not load ({_first_line(e)}); "
                        "expected a model saved by a cmisweep trial") from None
    return model.eval(), cfg


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message: torch's and MLflow's run to paragraphs."""
    text = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _torch_version() -> str:
    """The torch that saved the model (its pin is pyproject.toml's), without a local build tag."""
    from importlib.metadata import version

    return version("torch").split("+")[0]
