"""Training-step speed of the PixelCNN-VAE: the plain fp32 eager step against the fast path, and a
short training run showing the fast path's validation objective stays within 1% of fp32.

    .venv/bin/python bench/train_step.py [--configs paper,reduced] [--steps 4] [--train-steps 300,60]
    .venv/bin/python bench/train_step.py --decoder he2019 --configs paper --variants plain,fast --kinds vanilla --skip-runs

Variants (batch 50, one VAE step + 2 critic steps of CMI at gamma 0.3; the vanilla VAE step alone
in its own column):
    plain      fp32, full 7x7/5x5/3x3 masked kernels, contiguous tensors (the reference)
    cropped    fp32, masked kernels without their all-zero lower rows (same outputs)
    bf16       cropped + bf16 autocast
    fast       cropped + bf16 autocast + channels-last (train.precision/memory_format: auto)
Ratios are within this run; absolute times move with the machine's load. `--decoder he2019` times
the residual decoder of He et al. (2019) (model.decoder: he2019) instead of the plain stack.
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
from cmisweep.regularizer_api import PaperJ

CONFIGS = {"paper": (13, 64), "13x32": (13, 32), "reduced": (6, 32)}
VARIANTS = {  # name: (cropped kernels, precision, memory format)
    "plain": (False, "fp32", "contiguous"),
    "cropped": (True, "fp32", "contiguous"),
    "bf16": (True, "bf16", "contiguous"),
    "fast": (True, "bf16", "channels_last"),
}


def trainer(layers, maps, variant, reg, x, val, seed=0, lr=1e-3, decoder="plain"):
    cropped, precision, fmt = VARIANTS[variant]
    torch.manual_seed(seed)
    model = PixelCNNVAE(layers=layers, maps=maps, cropped=cropped, decoder=decoder)
    critics = build_critics(model.z_dim, model.critic_spec, reg.uses_m, reg.uses_c)
    cfg = TrainConfig(epochs=1, batch_size=50, lr=lr, precision=precision, memory_format=fmt)
    return Trainer(model, PaperJ(reg, critics), x, val, cfg, critic_lr=10 * lr, seed=seed)


def step_time(layers, maps, variant, reg, steps, decoder="plain") -> float:
    x = (torch.rand(50 * (steps + 2), 1, 28, 28) < 0.3).to(torch.uint8)
    t = trainer(layers, maps, variant, reg, x, x[:50], decoder=decoder)
    times = []
    for i in range(steps + 2):
        xb = t._layout(x[i * 50: (i + 1) * 50])
        t0 = time.perf_counter()
        t.train_step(xb)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def data(n_train: int, n_val: int):
    """Fashion-MNIST when $CMISWEEP_DATA has it (real objectives), else synthetic bars."""
    try:
        from cmisweep.data import load_images

        d = load_images("fashion-mnist", train_size=n_train, val_size=n_val)
        return d.train_x, d.val_x, "fashion-mnist"
    except Exception:  # noqa: BLE001 - a benchmark runs anywhere
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers import synthetic_images

        x, _ = synthetic_images(n_train + n_val)
        return x[:n_train], x[n_train:], "synthetic"


def short_run(layers, maps, reg, steps: int, variant: str, seed: int, decoder="plain") -> tuple[float, float]:
    """(validation objective in fp32, seconds) after `steps` steps; the batches depend on the data
    seed alone, the initial weights on `seed`."""
    x, val, _ = data(max(steps * 50, 500), 1000)
    t = trainer(layers, maps, variant, reg, x, val, seed=seed, decoder=decoder)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for i in range(steps):
        idx = perm[(i * 50) % len(x): (i * 50) % len(x) + 50]
        t.train_step(t._layout(x[idx]))
    elapsed = time.perf_counter() - t0
    torch.manual_seed(123)  # the same z noise in every validation pass
    return t.validate(precision="fp32")["objective"], elapsed


def compare(name: str, reg, steps: int, seeds: list[int], decoder="plain") -> None:
    layers, maps = CONFIGS[name]
    res = {v: [short_run(layers, maps, reg, steps, v, s, decoder) for s in seeds] for v in ("plain", "fast")}
    p = [o for o, _ in res["plain"]]
    f = [o for o, _ in res["fast"]]
    tp, tf = sum(t for _, t in res["plain"]), sum(t for _, t in res["fast"])
    mp, mf = statistics.mean(p), statistics.mean(f)
    line = (f"{name:8} {reg.preset:7} {steps:4d} steps x {len(seeds)} seed(s): plain fp32 {mp:.2f}, fast {mf:.2f}: "
            f"difference {100 * abs(mf - mp) / abs(mp):.2f}% ({tp / tf:.2f}x faster)")
    if len(seeds) > 1:
        line += f"; seed spread (std) plain {statistics.stdev(p):.2f}, fast {statistics.stdev(f):.2f}"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="paper,reduced")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant (median)")
    ap.add_argument("--train-steps", default="150,600", help="vanilla short-run steps for the configs, in order")
    ap.add_argument("--vanilla-seeds", type=int, default=1)
    ap.add_argument("--skip-timing", action="store_true", help="only the short training runs")
    ap.add_argument("--skip-cmi", action="store_true")
    ap.add_argument("--cmi-config", default="reduced")
    ap.add_argument("--cmi-steps", type=int, default=300)
    ap.add_argument("--cmi-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", choices=["plain", "he2019"], default="plain")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="timed variants; ratios are to the first")
    ap.add_argument("--kinds", default="cmi,vanilla", help="timed steps: cmi, vanilla or both")
    ap.add_argument("--skip-runs", action="store_true", help="only the step timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = args.configs.split(",")
    dec = args.decoder
    print(f"torch {torch.__version__}, {args.threads} threads, batch 50, median of {args.steps} steps, "
          f"decoder {dec}\n")
    kinds = {"cmi": R.preset("cmi", 0.3), "vanilla": R.preset("vanilla")}
    kinds = {k: kinds[k] for k in args.kinds.split(",")}
    variants = args.variants.split(",")
    print(f"{'config':8} {'variant':8}" + "".join(f" {k + ' step s':>14} {'x ' + variants[0]:>8}" for k in kinds))
    for name in configs if not args.skip_timing else []:
        layers, maps = CONFIGS[name]
        base = {}
        for variant in variants:
            line = f"{name:8} {variant:8}"
            for k, reg in kinds.items():
                t = step_time(layers, maps, variant, reg, args.steps, dec)
                base.setdefault(k, t)
                line += f" {t:14.3f} {base[k] / t:7.2f}x"
            print(line, flush=True)
    if args.skip_runs:
        return
    print(f"\nshort training runs on {data(500, 1000)[2]}, lr 1e-3, the same init and batches; objective on "
          "1000 validation images, computed in fp32")
    print("vanilla (no critic: a numerical comparison):")
    for name, n in zip(configs, [int(v) for v in args.train_steps.split(",")]):
        compare(name, R.preset("vanilla"), n, list(range(args.vanilla_seeds)), dec)
    if not args.skip_cmi:
        print("CMI at gamma 0.3 (adversarial: one run's trajectory is chaotic, so seeds are averaged):")
        compare(args.cmi_config, R.preset("cmi", 0.3), args.cmi_steps, list(range(args.cmi_seeds)), dec)

if __name__ == "__main__":
    main()
