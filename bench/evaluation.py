"""Evaluation cost: a trial's evaluation against its training, and I-hat before/after batching.

    .venv/bin/python bench/evaluation.py [--configs quickstart fmnist-reduced] [--epochs N] [--ihat-steps N]

For each config (search_spaces/quickstart.yaml's trial as preset cmi, gamma 0.3;
search_spaces/trials/fmnist-reduced.yaml): trains it (the config's epochs unless --epochs), then on
the SAME trained model times each piece of cmisweep.trial.evaluate: test/val ELBO, I-hat by the
former path (legacy=True: critics one after another, encoding every batch) and by the current one
(one ensemble per head, encodings cached), probes, mCAS + sample grid. Prints times, the
eval/train ratio and the I-hat values of both paths with their critic-seed spreads. Needs
Fashion-MNIST ($CMISWEEP_DATA or ./data).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmisweep.config import TrialConfig  # noqa: E402
from cmisweep.configio import read_yaml  # noqa: E402
from cmisweep.metrics.images import evaluate_images  # noqa: E402
from cmisweep.metrics.mutual_info import ihat_metrics  # noqa: E402
from cmisweep.sweep.space import load_space, trial_config  # noqa: E402
from cmisweep.trial import build_trainer  # noqa: E402

NAMES = ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact")


def config(name: str) -> TrialConfig:
    if name == "quickstart":
        return trial_config(load_space(ROOT / "search_spaces/quickstart.yaml"), {"preset": "cmi", "gamma": 0.3, "seed": 0})
    return TrialConfig.model_validate(read_yaml(ROOT / "search_spaces/trials/fmnist-reduced.yaml"))


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def bench(name: str, epochs: int | None, ihat_steps: int | None) -> None:
    cfg = config(name)
    if ihat_steps:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(
            update={"ihat": cfg.evaluation.ihat.model_copy(update={"steps": ihat_steps})})})
    epochs = epochs or cfg.train.epochs
    trainer, data = build_trainer(cfg)
    _, t_train = timed(lambda: trainer.fit(epochs))
    trainer.load_best()
    model, ev = trainer.model.eval(), cfg.evaluation
    t = {}
    _, t["val+test ELBO"] = timed(lambda: [trainer.validate(x, precision="fp32") for x in (data.val_x, data.test_x)])
    torch.manual_seed(cfg.seed + 7)
    new, t["I-hat (new)"] = timed(lambda: ihat_metrics(model, data, ev, cfg.seed))
    torch.manual_seed(cfg.seed + 7)
    old, t["I-hat (legacy)"] = timed(lambda: ihat_metrics(model, data, ev, cfg.seed, legacy=True))
    with tempfile.TemporaryDirectory() as tmp:
        rest, _ = evaluate_images(model, data, ev.model_copy(update={"ihat": None}), Path(tmp), cfg.seed)
    t["probes"], t["mCAS + sample grid"] = rest["time/probes_s"], rest["time/mcas_s"]
    print(f"\n== {name}: {epochs} epochs of {len(data.train_x)} images, I-hat {ev.ihat.seeds} seeds x "
          f"{ev.ihat.steps} steps x batch {ev.ihat.batch_size}, threads {torch.get_num_threads()}")
    print(f"training                 {t_train:8.1f} s")
    for k, v in t.items():
        print(f"{k:24} {v:8.1f} s")
    eval_new = sum(v for k, v in t.items() if k != "I-hat (legacy)")
    eval_old = sum(v for k, v in t.items() if k != "I-hat (new)")
    print(f"I-hat speed-up           {t['I-hat (legacy)'] / t['I-hat (new)']:8.2f} x")
    print(f"evaluation / training    {eval_new / t_train:8.2f} (new)   {eval_old / t_train:.2f} (legacy)")
    print(f"{'metric':16} {'legacy mean':>11} {'std':>6}   {'new mean':>9} {'std':>6}   |diff|/legacy std")
    for k in NAMES:
        d = abs(new[k] - old[k]) / max(old[k + "_std"], 1e-9)
        print(f"{k:16} {old[k]:11.3f} {old[k + '_std']:6.3f}   {new[k]:9.3f} {new[k + '_std']:6.3f}   {d:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["quickstart", "fmnist-reduced"])
    ap.add_argument("--epochs", type=int, default=None, help="train epochs (default: the config's)")
    ap.add_argument("--ihat-steps", type=int, default=None, help="critic steps (default: the config's)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.configs:
        bench(name, args.epochs, args.ihat_steps)


if __name__ == "__main__":
    main()
