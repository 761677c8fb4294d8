"""Training-step and mCAS-sampling times of the PixelCNN-VAE on this machine.

    .venv/bin/python bench/train_step.py [--steps 5] [--configs paper,13x32,6x32] [--threads 2]

Prints one line per (config, precision): seconds per training step (batch 50, VAE step + 2 critic
steps of CMI at gamma 0.3, and the vanilla VAE step alone) and the time to draw the 1000 mCAS
samples (100 z x 10) with the cached sampler. Ratios within one run are what to compare; the
absolute times move with the machine's load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmisweep import regularizer as R  # noqa: E402
from cmisweep.config import TrainConfig  # noqa: E402
from cmisweep.models.critics import build_critics  # noqa: E402
from cmisweep.models.pixelcnn import PixelCNNVAE  # noqa: E402
from cmisweep.training import Trainer  # noqa: E402

CONFIGS = {"paper": (13, 64), "13x32": (13, 32), "6x32": (6, 32)}


def step_time(layers: int, maps: int, precision: str, reg: R.Regularizer, steps: int) -> float:
    torch.manual_seed(0)
    model = PixelCNNVAE(layers=layers, maps=maps)
    critics = build_critics(model.z_dim, model.critic_spec, reg.uses_m, reg.uses_c)
    x = (torch.rand(50 * (steps + 2), 1, 28, 28) < 0.3).to(torch.uint8)
    cfg = TrainConfig(epochs=1, batch_size=50, precision=precision)
    t = Trainer(model, reg, critics, x, x[:50], cfg, critic_lr=1e-3)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        t.train_step(x[i * 50: (i + 1) * 50])
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def sample_time(layers: int, maps: int, dtype: torch.dtype) -> float:
    torch.manual_seed(0)
    model = PixelCNNVAE(layers=layers, maps=maps).eval()
    z = torch.randn(100, model.z_dim)
    t0 = time.perf_counter()
    model.generate(z, 10, dtype=dtype)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--configs", default="paper,13x32,6x32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sampling", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 50, median of {args.steps} steps")
    print(f"{'config':8} {'precision':9} {'cmi step s':>10} {'vanilla step s':>14} {'mCAS 1000 samples s':>20}")
    for name in args.configs.split(","):
        layers, maps = CONFIGS[name]
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            cmi = step_time(layers, maps, precision, R.preset("cmi", 0.3), args.steps)
            van = step_time(layers, maps, precision, R.preset("vanilla"), args.steps)
            samp = float("nan") if args.no_sampling else sample_time(layers, maps, dtype)
            print(f"{name:8} {precision:9} {cmi:10.3f} {van:14.3f} {samp:20.1f}", flush=True)


if __name__ == "__main__":
    main()
