"""Sweep overhead: `cmisweep run` of 4 short trials against the same 4 trainings in plain Python
(a process pool of the same width, no Ray, no MLflow).

    .venv/bin/python bench/sweep_overhead.py [--epochs 3] [--train-size 6000] [--cluster]

Both run the same trial configs (reduced PixelCNN-VAE, 1 thread per trial, 2 at a time on 2
cores) through the same core (cmisweep.trial.run_trial), evaluation included. The ratio of wall
times is the price of Ray start-up, scheduling, per-epoch checkpoints and reports, MLflow tracking
and the final reports. With --cluster, the same sweep also runs on the local multi-node cluster
(`cmisweep cluster rehearse cluster/local.yaml`: a head without trials, a worker node the autoscaler
starts on demand), in the same run, to price a cluster's extra start-up and scheduling.
Needs Fashion-MNIST ($CMISWEEP_DATA or ./data).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def space(epochs: int, train_size: int) -> dict:
    return {
        "name": "overhead",
        "trial": {
            "data": {"dataset": "fashion-mnist", "train_size": train_size, "val_size": 1000, "test_size": 2000},
            "model": {"kind": "pixelcnn_vae", "layers": 6, "maps": 32},
            "regularizer": {"critic_width": 64},
            "train": {"epochs": epochs, "batch_size": 50, "lr": 1e-3, "threads": 1},
            "evaluation": {"ihat": {"seeds": 3, "steps": 50, "batch_size": 50, "n_train": 500, "n_eval": 500,
                                    "width": 64}},
        },
        "search": {"presets": ["beta", "cmi"], "gamma": [0.3, 0.6], "seeds": [0]},
        "resources": {"cpu": 1},
        "concurrency": 2,
    }


def one(args) -> float:
    cfg_dict, out = args
    import torch

    from cmisweep.config import TrialConfig
    from cmisweep.trial import run_trial

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_trial(TrialConfig.model_validate(cfg_dict), out)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--cluster", action="store_true", help="also on the local multi-node cluster")
    args = ap.parse_args()
    from cmisweep.sweep.space import SearchSpace, grid_points, trial_config

    sp = space(args.epochs, args.train_size)
    model = SearchSpace.model_validate(sp)
    configs = [trial_config(model, p).model_dump() for p in grid_points(model)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            per_trial = list(pool.map(one, [(c, tmp / f"plain{i}") for i, c in enumerate(configs)]))
        plain = time.perf_counter() - t0
        (tmp / "space.yaml").write_text(yaml.safe_dump(sp))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "cmisweep", "run", str(tmp / "space.yaml"), "--results",
                            str(tmp / "results"), "--quiet"], capture_output=True, text=True, env=env, cwd=tmp)
        sweep = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"cmisweep run failed:\n{r.stderr[-3000:]}")
        if args.cluster:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "cmisweep", "cluster", "rehearse", str(ROOT / "cluster" / "local.yaml"),
                                str(tmp / "space.yaml"), "--results", str(tmp / "cluster")],
                               capture_output=True, text=True, env={**env, "RAY_ADDRESS": ""}, cwd=tmp)
            cluster = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"cmisweep cluster rehearse failed:\n{r.stderr[-3000:]}")
    print(f"4 trials ({args.epochs} epochs, {args.train_size} images, reduced PixelCNN-VAE, 2 at a time on 2 cores)")
    print(f"  plain Python (process pool of 2): {plain:6.1f} s   (trials {', '.join(f'{t:.0f}' for t in per_trial)} s)")
    print(f"  cmisweep run (Ray + MLflow):      {sweep:6.1f} s")
    print(f"  overhead ratio: {sweep / plain:.3f}x")
    if args.cluster:
        print(f"  cmisweep cluster rehearse (local multi-node cluster): {cluster:6.1f} s")
        print(f"  cluster against the single-node run: {cluster / sweep:.3f}x ({cluster - sweep:+.1f} s)")


if __name__ == "__main__":
    main()
