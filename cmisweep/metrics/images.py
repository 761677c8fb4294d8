"""The image evaluation suite of one trained PixelCNN-VAE: I-hat, AoLR/AoSVM, mCAS, sample grid."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from cmisweep.config import EvalConfig
from cmisweep.metrics.mcas import mcas
from cmisweep.metrics.mutual_info import ihat_metrics
from cmisweep.metrics.probes import probe_accuracy
from cmisweep.metrics.samples import save_grid


def evaluate_images(model, data, cfg: EvalConfig, out_dir: Path, seed: int = 0) -> tuple[dict, list[Path]]:
    """Metrics (flat dict) and artifact files written under out_dir."""
    metrics: dict = {}
    artifacts: list[Path] = []
    model.eval()
    if cfg.ihat is not None:
        metrics.update(ihat_metrics(model, data, cfg, seed))
    if cfg.probes:
        t0 = time.perf_counter()
        metrics.update(probe_accuracy(model, data.train_x, data.train_y, data.test_x, data.test_y,
                                      cfg.probe_per_class, seed, cfg.batch_size))
        metrics["time/probes_s"] = time.perf_counter() - t0
    if cfg.mcas:  # the sample grid shows mCAS's own samples: a deferred mCAS defers it too
        t0 = time.perf_counter()
        scores, real, fake = mcas(model, data.train_x, data.train_y, data.test_x, data.test_y,
                                  cfg.mcas_real_per_class, cfg.mcas_samples, seed)
        metrics.update(scores)
        if cfg.sample_grid:
            # one real image per class, then its samples: the layout of the paper's Fig. 4
            per = cfg.mcas_real_per_class
            rows = torch.arange(0, len(real), per)
            fake_rows = fake.reshape(len(real), cfg.mcas_samples, *fake.shape[1:])[rows].reshape(-1, *fake.shape[1:])
            artifacts.append(save_grid(real[rows], fake_rows, out_dir / "samples.png"))
        metrics["time/mcas_s"] = time.perf_counter() - t0
    return metrics, artifacts
