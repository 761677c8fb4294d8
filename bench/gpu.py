"""GPU figures (BENCHMARKS.md section 5): the paper-config epoch time, the mCAS sampling time, and
trials per GPU-hour with 4 trials at 0.25 GPU against 1 trial at a time on the whole GPU.

    .venv/bin/python bench/gpu.py [--steps 200] [--pack-steps 300]

Without a CUDA device it says so and exits 0: nothing is measured. `--device cpu` runs the same
three measurements on a tiny model and a few steps, to check the script itself on any machine.
Needs Fashion-MNIST ($CMISWEEP_DATA or ./data).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmisweep.configio import read_yaml  # noqa: E402
from cmisweep.sweep.space import SearchSpace, grid_points, trial_config  # noqa: E402
from cmisweep.trial import build_trainer  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def paper_space(device: str) -> dict:
    """search_spaces/fmnist.yaml as shipped (tiny model on cpu), on the given device."""
    space = read_yaml(ROOT / "search_spaces" / "fmnist.yaml")
    space["trial"]["train"]["device"] = device
    if device == "cpu":
        space["trial"]["model"].update(layers=6, maps=8)
        space["trial"]["data"].update(train_size=2000, val_size=500, test_size=500)
    return space


def epoch_time(space: dict, steps: int, device: str) -> tuple[float, int]:
    """Seconds per epoch (one pass over the training split, 48k images as shipped), from `steps` timed steps of
    CMI-VAE at gamma 0.3 after a warm-up; returns (seconds, steps per full epoch)."""
    point = {"preset": "cmi", "gamma": 0.3, "seed": 0, "params": {"train.steps_per_epoch": steps}}
    cfg = trial_config(SearchSpace.model_validate(space), point)
    trainer, _ = build_trainer(cfg)
    trainer.train_epoch()  # warm-up: kernels chosen, allocator filled
    sync(device)
    t0 = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    per_step = (time.perf_counter() - t0) / steps
    n_full = len(trainer.train_x) // cfg.train.batch_size
    return per_step * n_full, n_full


def sampling_time(space: dict, device: str) -> dict[str, float]:
    """The mCAS set: 100 z x 10 samples = 1000 images, fp32 and bf16."""
    from cmisweep.models import build_model

    cfg = trial_config(SearchSpace.model_validate(space), {"preset": "cmi", "gamma": 0.3, "seed": 0})
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28)).to(device).eval()
    z = torch.randn(100, model.z_dim, device=device)
    u = torch.rand(1000, 1, 28, 28, device=device)
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model.generate(z[:2], 1, noise=u[:2], dtype=dtype)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        model.generate(z, 10, noise=u, dtype=dtype)
        sync(device)
        out[name] = time.perf_counter() - t0
    return out


def packing(space: dict, steps: int, device: str, tmp: Path) -> dict[str, float]:
    """4 short trials (1 epoch of `steps` steps, no final evaluation) through `cmisweep run`,
    4 at a time at 0.25 GPU each against 1 at a time on a whole GPU; trials per GPU-hour."""
    out = {}
    share = [("4 x 0.25 GPU", 0.25, 4), ("1 x 1 GPU", 1.0, 1)] if device == "cuda" else [("2 at once", 0, 2), ("1 at once", 0, 1)]
    for label, gpu, concurrency in share:
        sp = yaml.safe_load(yaml.safe_dump(space))
        sp["name"] = f"pack{concurrency}"
        sp["trial"]["train"].update(epochs=1, steps_per_epoch=steps)
        sp["trial"]["evaluation"] = {"enabled": False}
        sp["search"] = {"presets": ["cmi"], "gamma": [0.1, 0.2, 0.3, 0.4], "seeds": [0]}
        sp["resources"] = {"cpu": 1, "gpu": gpu}
        sp["concurrency"] = concurrency
        path = tmp / f"{sp['name']}.yaml"
        path.write_text(yaml.safe_dump(sp))
        assert len(grid_points(SearchSpace.model_validate(sp))) == 4
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "cmisweep", "run", str(path), "--results", str(tmp / "results"),
                            "--quiet"], capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"cmisweep run ({label}) failed:\n{r.stderr[-3000:]}")
        out[label] = 4 / wall * 3600
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--steps", type=int, default=200, help="timed training steps for the epoch time")
    ap.add_argument("--pack-steps", type=int, default=300, help="training steps of each packed trial")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: GPU figures not measured")
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (script check, tiny model)"
    print(f"torch {torch.__version__}, {name}")
    space = paper_space(args.device)
    seconds, n_full = epoch_time(space, args.steps, args.device)
    print(f"paper-config epoch (CMI-VAE at gamma 0.3, {n_full} steps of batch 50, fast path): {seconds:.1f} s "
          f"(300 epochs: {seconds * 300 / 3600:.1f} h)")
    s = sampling_time(space, args.device)
    print(f"mCAS sampling, 1000 images: fp32 {s['fp32']:.2f} s, bf16 {s['bf16']:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        rates = packing(space, args.pack_steps, args.device, Path(tmp))
    (a, ra), (b, rb) = rates.items()
    print(f"trials per GPU-hour ({args.pack_steps}-step trials, Ray start-up included): "
          f"{a}: {ra:.0f}, {b}: {rb:.0f}, ratio {ra / rb:.2f}x")


if __name__ == "__main__":
    main()
