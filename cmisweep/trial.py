"""One trial from a TrialConfig: build data, model, regularizer and critics, train, evaluate.

The one trial body: `cmisweep train` (run_trial) and the sweep's Ray trainable both build with
build_trainer and end with finish(), so they write the same artifacts; the trainable adds only
what Tune needs (per-epoch reports, checkpoints, the scheduler's stop requests).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from cmisweep.config import TrialConfig, selected, switched_on
from cmisweep.data import load_dataset
from cmisweep.models import build_model
from cmisweep.kept_model import round_to_kept
from cmisweep.saved import save_model
from cmisweep.device import resolve_device
from cmisweep.vocabulary import EVAL_METRICS, eval_metrics
from cmisweep.regularizer_api import build_regularizer
from cmisweep.training import Trainer


@dataclass
class TrialResult:
    metrics: dict  # final metrics at the best validation epoch
    artifacts: list[Path] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # the per-epoch validation metrics


def build_trainer(cfg: TrialConfig, data=None) -> tuple[Trainer, object]:
    """(trainer, data) for a config; the same seed gives the same initial weights."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    data = data if data is not None else load_dataset(cfg.data, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(data.train_x.shape[1:]))
    reg = build_regularizer(cfg.regularizer, model)
    order = cfg.seed + cfg.train.order_offset if cfg.train.order_seed is None else cfg.train.order_seed
    trainer = Trainer(model, reg, data.train_x, data.val_x, cfg.train, **cfg.critic_training(reg.aux_lr),
                      seed=order, device=device)
    return trainer, data


def flat_params(cfg: TrialConfig) -> dict:
    """The config as flat dotted keys (MLflow's params), plus J's resolved weights under names of
    their own (Eq. 14: J = -Recon - KL(s) - w_z KL(z) - w_m M - w_c C): J's alpha and gamma would
    read as the searched ones, and for beta/advmi they are not (their knob is J's alpha, w_c is 0)."""
    out: dict = {}

    def walk(prefix: str, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", cfg.model_dump())
    if cfg.regularizer.plugin is not None:  # a plug-in's resolved parameters (its gamma axis filled in)
        out.update({f"objective.{k}": v for k, v in cfg.regularizer.plugin_params.items()})
        return out
    reg = cfg.regularizer.objective
    # rounded for the eye: 1 - 0.7 is 0.30000000000000004 in floats, the weight a user set is 0.3
    out.update({"objective.w_z": round(reg.w_z, 12), "objective.w_m": round(reg.w_m, 12), "objective.w_c": reg.w_c,
                "objective.m_term": reg.m_term, "objective.uses_c": reg.uses_c, "objective.uses_m": reg.uses_m,
                "objective.critic_lr": cfg.critic_lr})
    return out


def evaluate(trainer: Trainer, data, cfg: TrialConfig, out_dir: Path) -> tuple[dict, list[Path]]:
    """Final metrics at the best epoch: ELBO terms on validation and test, then the data's suite
    less what the config defers to `cmisweep evaluate`."""
    trainer.load_best()
    round_to_kept(trainer.model)  # the evaluated model is the one kept: re-evaluating it reproduces these numbers
    torch.manual_seed(cfg.seed + 7)  # the evaluation is reproducible whatever happened in training
    metrics: dict = {"best_epoch": trainer.best["epoch"] if trainer.best else 0}
    for split, x in (("val", data.val_x), ("test", data.test_x)):
        # fp32 whatever the training precision: bf16 logits shift a 784-pixel sum by ~1%
        metrics.update({f"{split}/{k}": v for k, v in trainer.validate(x, precision="fp32").items()})
    # posterior collapse as an outcome: the active units of z (Burda et al. 2016, Sect. 5.2) on the
    # test set, counted from the test pass's own q(z|x) means
    metrics["active_units"] = metrics.pop("test/active_units")
    metrics["active_units_frac"] = metrics["active_units"] / trainer.model.z_dim
    artifacts: list[Path] = []
    if cfg.evaluation.enabled:
        on = switched_on(cfg.evaluation)
        m, artifacts = run_suite(trainer.model, data, cfg, [g for g in eval_metrics(cfg.data.modality) if g in on],
                                 out_dir)
        metrics.update(m)
    return metrics, artifacts


def run_suite(model, data, cfg: TrialConfig, metrics: list[str], out_dir: Path,
              figures: bool = True) -> tuple[dict, list[Path]]:
    """The data's evaluation suite on `metrics` less those the config defers: a trial's end, and
    `cmisweep evaluate` on a kept model (which asks for what it names, deferred or not, with
    `cfg.evaluation.defer` cleared, and draws no figures).

    Each metric group runs after torch.manual_seed of its own (seed + 7919 x its place in
    vocabulary.EVAL_METRICS): a group that draws from torch's global generator (the speech
    conversions) gives the same value whichever groups ran before it, so a deferred group
    evaluated alone equals the all-in-one trial's."""
    from cmisweep.metrics.images import evaluate_images
    from cmisweep.metrics.speech import evaluate_speech

    image = cfg.data.modality == "image"
    suite = evaluate_images if image else evaluate_speech
    ev = cfg.evaluation.model_copy(update={"sample_grid": figures and cfg.evaluation.sample_grid})
    out, files = {}, []
    for group in [m for m in metrics if m not in cfg.evaluation.defer]:
        torch.manual_seed(cfg.seed + 7919 * (1 + list(EVAL_METRICS).index(group)))
        one = selected(ev, [group])  # the image sample grid comes with mCAS's samples
        m, f = suite(model, data, one if image else one.model_copy(update={"sample_grid": False}), out_dir, cfg.seed)
        out.update(m)
        files += f
    if not image and ev.sample_grid:  # the conversion figure, once
        torch.manual_seed(cfg.seed + 7)
        files += suite(model, data, selected(ev, []), out_dir, cfg.seed)[1]
    return out, files


def finish(trainer: Trainer, data, cfg: TrialConfig, out_dir: Path) -> tuple[dict, list[Path]]:
    """The end of every trial, `cmisweep train` and a sweep's alike: evaluate the best epoch and
    write its artifacts into out_dir: metrics.json, trial.yaml (the resolved config), the best
    epoch's model as an MLflow model (model/, cmisweep.saved), curves.png and the suite's figures
    (samples.png / conversion.png)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    metrics, artifacts = evaluate(trainer, data, cfg, out_dir)
    metrics["time/eval_s"] = time.perf_counter() - t0
    (out_dir / "trial.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    files = [out_dir / "trial.yaml", out_dir / "metrics.json", save_model(trainer.model, cfg, data, out_dir)]
    if trainer.history:
        files.append(plot_curves(trainer.history, out_dir / "curves.png"))
    return metrics, files + [a for a in artifacts if a not in files]


def run_trial(
    cfg: TrialConfig,
    out_dir: str | Path,
    on_epoch: Callable[[dict, Trainer], None] | None = None,
    resume_from: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> TrialResult:
    """`cmisweep train`: train (continuing from `resume_from` if given), then finish()."""
    trainer, data = build_trainer(cfg)
    if resume_from is not None:
        trainer.restore(resume_from)
    trainer.fit(cfg.train.epochs, on_epoch=on_epoch, checkpoint=checkpoint)
    metrics, artifacts = finish(trainer, data, cfg, Path(out_dir))
    return TrialResult(metrics, artifacts, trainer.history)


def plot_curves(history: list[dict], path: Path) -> Path:
    """The validation curves of a trial, one panel per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("val/elbo", "val/objective", "val/kl_z", "val/c_hat", "val/m_hat") if k in history[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    for ax, k in zip(axes if len(keys) > 1 else [axes], keys):
        ys = [h.get(k, math.nan) for h in history]
        ax.plot([h["epoch"] for h in history], ys, marker="o", ms=3)
        ax.set_title(k)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
