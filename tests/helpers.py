"""Small builders shared by tests: IDX files, tiny configs, synthetic binary images."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def synthetic_images(n: int, seed: int = 0, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary 28x28 images whose class sets a bar's position: a global feature plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    x = (torch.rand(n, 1, 28, 28, generator=g) < 0.05).to(torch.uint8)
    for i in range(n):
        r = 2 + int(y[i]) * 2
        x[i, 0, r: r + 3, 4:24] = 1
    return x, y


def tiny_trial(**over) -> dict:
    """A trial config small enough for a unit test (real data subset)."""
    cfg = {
        "data": {"dataset": "fashion-mnist", "train_size": 300, "val_size": 200, "test_size": 300},
        "model": {"kind": "pixelcnn_vae", "layers": 6, "maps": 8, "z_dim": 8, "encoder_channels": 16},
        "regularizer": {"preset": "cmi", "knob": 0.3, "critic_width": 16},
        "train": {"epochs": 1, "batch_size": 50, "lr": 1e-3, "steps_per_epoch": 3},
        # fixed critic steps (converge: false): the doubling rule costs 15 runs of `steps` and is
        # tested where it is the subject (test_ihat, test_evaluate_stage, the dry run's pricing)
        "evaluation": {"ihat": {"seeds": 3, "steps": 5, "n_train": 100, "n_eval": 100, "width": 16,
                                "converge": False},
                       "probe_per_class": 10, "mcas_real_per_class": 1, "mcas_samples": 2},
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def tiny_space(name: str = "tiny", **over) -> dict:
    """A search space of tiny trials on real Fashion-MNIST: seconds per trial."""
    trial = tiny_trial()
    trial.pop("regularizer")
    space = {
        "name": name,
        "trial": {**trial, "regularizer": {"critic_width": 16}},
        "search": {"presets": ["beta", "cmi"], "gamma": [0.0, 0.3], "seeds": [0]},
        "resources": {"cpu": 1},
        "concurrency": 2,
    }
    for key, value in over.items():
        space[key] = {**space.get(key, {}), **value} if isinstance(value, dict) and key != "trial" else value
    return space


def cli(*args, cwd=None, timeout=600, env=None):
    """Run `python -m cmisweep ...` as a user would; returns the CompletedProcess."""
    import os
    import signal
    import subprocess
    import sys

    # its own process group, so that a timeout stops the Ray it started too (subprocess.run kills the
    # child alone: a Ray left running slows every later test), and says where the command was
    proc = subprocess.Popen([sys.executable, "-m", "cmisweep", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env={**os.environ, **(env or {})},
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"`cmisweep {' '.join(map(str, args))}` ran past {timeout} s; the end of its "
                             f"output:\n{err[-4000:]}\n{out[-1000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tiny_speech_space(corpus, name: str = "speech-tiny") -> dict:
    """A DSAE sweep of tiny trials on a synthesized corpus at `corpus`."""
    return {
        "name": name,
        "trial": {
            "data": {"dataset": "speech-synth", "path": str(corpus), "segment_frames": 20},
            "model": {"kind": "dsae", "z_dim": 8, "s_dim": 8, "hidden": 16},
            "regularizer": {"critic_width": 16},
            "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
            "evaluation": {"ihat": {"seeds": 3, "steps": 5, "n_train": 64, "n_eval": 64, "width": 16, "converge": False},
                           "vc_segments": 40, "vc_pairs": 10},
        },
        "search": {"presets": ["beta", "cmi"], "gamma": [0.5], "seeds": [0]},
        "resources": {"cpu": 1},
        "concurrency": 2,
    }


def fit_and_read_forms(critics: dict, sample, held_out: list, steps: int, batch_size: int, lr: float,
                       seed: int = 0) -> dict:
    """Critics keyed by negative form ('paper' | 'exact'), one head, trained as I-hat trains them
    (cmisweep.critic_training.fit: one ensemble, the same positive batches for all, each form's
    negatives from its own generator) and read out on the held-out (z, s) batches: {form: E[logit]}."""
    from cmisweep import critic_training
    from cmisweep.models.critic_ensemble import CriticEnsemble

    forms = list(critics)
    ensemble = CriticEnsemble([critics[f] for f in forms])
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(forms))]
    critic_training.fit([ensemble], forms, gens, sample, steps, batch_size, lr)
    (values,) = critic_training.read_out([ensemble], lambda: iter(held_out))
    return dict(zip(forms, values))
