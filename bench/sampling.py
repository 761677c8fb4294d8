"""mCAS sampling speed: the cached PixelCNN sampler against 784 full decoder passes at batch 1000.

    .venv/bin/python bench/sampling.py [--configs paper,reduced] [--batch 1000] [--passes 3] [--decoder he2019]
                                       [--skip-bf16] [--skip-check]

The naive sampler runs the whole decoder once per pixel; its time is 784 x the median of a few
measured full passes (running all 784 at batch 1000 takes hours for the paper config). The
cached sampler (cmisweep/models/sampling.py) is timed end to end, in fp32 and bf16. That both
draw the same images for the same noise is a test (tests/test_pixelcnn.py), checked here too on
a small batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmisweep.models.pixelcnn import PixelCNNVAE  # noqa: E402

CONFIGS = {"paper": (13, 64), "reduced": (6, 32)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="paper,reduced")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", choices=["plain", "he2019"], default="plain")
    ap.add_argument("--skip-bf16", action="store_true", help="bf16 is emulated (slow) on CPUs without bf16 units")
    ap.add_argument("--skip-check", action="store_true", help="no naive sampling of 4 images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, decoder {args.decoder}\n")
    for name in args.configs.split(","):
        layers, maps = CONFIGS[name]
        torch.manual_seed(0)
        model = PixelCNNVAE(layers=layers, maps=maps, decoder=args.decoder).eval()
        n_all = sum(p.numel() for p in model.parameters())
        n_enc = sum(p.numel() for p in model.encoder.parameters()) + sum(p.numel() for p in model.z_to_map.parameters())
        print(f"{name:8} parameters: {n_all:,} ({n_all - n_enc:,} in the decoder, z map excluded)", flush=True)
        z = torch.randn(args.batch, model.z_dim)
        with torch.no_grad():
            conds = model.conditions(z)
            x = torch.zeros(args.batch, 1, 28, 28)
            times = []
            for _ in range(args.passes):
                t0 = time.perf_counter()
                model.decode(x, conds)
                times.append(time.perf_counter() - t0)
        naive = 784 * statistics.median(times)
        u = torch.rand(args.batch, 1, 28, 28)
        t0 = time.perf_counter()
        model.generate(z, 1, noise=u)
        fp32 = time.perf_counter() - t0
        bf16_cell = "cached bf16 skipped"
        if not args.skip_bf16:
            t0 = time.perf_counter()
            model.generate(z, 1, noise=u, dtype=torch.bfloat16)
            bf16 = time.perf_counter() - t0
            bf16_cell = f"cached bf16 {bf16:6.1f} s ({naive / bf16:5.0f}x)"
        same = "not checked"
        if not args.skip_check:
            small = model.generate(z[:4], 1, noise=u[:4])
            same = torch.equal(small, model.generate_naive(z[:4], 1, noise=u[:4]))
        print(f"{name:8} naive (784 full passes, {statistics.median(times):.2f} s each): {naive:8.0f} s | "
              f"cached fp32 {fp32:6.1f} s ({naive / fp32:5.0f}x) | {bf16_cell} | same images as naive: {same}",
              flush=True)


if __name__ == "__main__":
    main()
