"""The evaluate stage's work on one trial (docs/design.md section 7): its kept model, its data, and
the evaluation suite on the metric groups asked for, exactly as the trial's own end would have run
them (same seeds, threads, device and memory layout), so that a deferred metric evaluated later
equals the one an all-in-one sweep records. `cmisweep evaluate` runs it in a Ray task per trial.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from cmisweep.config import TrialConfig
from cmisweep.configio import apply_overrides, validate
from cmisweep.data import load_dataset
from cmisweep.device import resolve_device
from cmisweep.kept_model import load_kept
from cmisweep.training import resolve_channels_last
from cmisweep.trial import run_suite
from cmisweep.vocabulary import eval_metrics


def with_settings(cfg: TrialConfig, overrides: list[str], file: str | None = "--set") -> TrialConfig:
    """The trial's config with `evaluation.*` overrides (KEY=VALUE) applied and nothing deferred.
    A recorded data path that is not on this machine (a study committed elsewhere) gives way to
    the data set's usual places ($CMISWEEP_DATA, ./data)."""
    raw = apply_overrides(cfg.model_dump(), overrides, file)
    raw["evaluation"]["defer"] = []
    out = validate(TrialConfig, raw, file)
    if out.data.path and not Path(out.data.path).exists():
        out = out.model_copy(update={"data": out.data.model_copy(update={"path": None})})
    return out


def evaluate_kept(model: str | Path | bytes, metrics: list[str], overrides: list[str] | None = None,
                  threads: int | None = None) -> dict[str, dict]:
    """{metric group: {metric name: value}} of the groups `metrics`, run one after another in the
    suite's order on the kept model (a path, or the file's bytes: a task on another node), plus
    {"": {"device": ..., "wall_s": ...}}."""
    t0 = time.perf_counter()
    net, cfg = load_kept(model)
    cfg = with_settings(cfg, overrides or [])
    if cfg.train.threads or threads:
        torch.set_num_threads(cfg.train.threads or threads)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.data, device)
    net = net.to(device)
    if resolve_channels_last(cfg.train.memory_format, net):  # as the trainer held it
        net.to(memory_format=torch.channels_last)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cmisweep-evaluate-") as d:
        for group in eval_metrics(cfg.data.modality):
            if group in metrics:
                out[group], _ = run_suite(net, data, cfg, [group], Path(d), figures=False)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    out[""] = {"device": device_name, "wall_s": time.perf_counter() - t0}
    return out
