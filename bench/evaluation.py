"""Evaluation cost: a trial's evaluation against its training, and I-hat in fp32 and in its precision.

    .venv/bin/python bench/evaluation.py [--configs quickstart fmnist-reduced speech-quick] [--epochs N] [--ihat-steps N]
                                         [--fewer-steps 2 4]

For each config (search_spaces/quickstart.yaml's trial as preset cmi, gamma 0.3;
search_spaces/trials/fmnist-reduced.yaml): trains it (the config's epochs unless --epochs), then on
the SAME trained model times each piece of cmisweep.trial.evaluate: test/val ELBO, I-hat (one
critic ensemble per head, encodings cached) in fp32 and in the precision the config's
evaluation.ihat.precision resolves to here, probes, mCAS + sample grid. Prints times, the
eval/train ratio and the I-hat values of both with their critic-seed spreads. (The former
one-critic-at-a-time path is gone from the package; its figures stay in BENCHMARKS.md section 7.) Needs
Fashion-MNIST ($CMISWEEP_DATA or ./data). speech-quick (search_spaces/speech-quick.yaml's trial,
cmi at gamma 0.4) is the DSAE's counterpart: I-hat, EER(z)/EER(s), VC-mCAS and the conversion
figure; its corpus is synthesized into ./data/speech-synth when missing (espeak-ng, ~10 s).
"""
from __future__ import annotations

import argparse
import subprocess
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
from cmisweep.metrics.speech import evaluate_speech  # noqa: E402
from cmisweep.sweep.space import load_space, trial_config  # noqa: E402
from cmisweep.trial import build_trainer  # noqa: E402
from cmisweep.training import bf16_native  # noqa: E402

NAMES = ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact")


def config(name: str) -> TrialConfig:
    if name == "quickstart":
        return trial_config(load_space(ROOT / "search_spaces/quickstart.yaml"), {"preset": "cmi", "gamma": 0.3, "seed": 0})
    if name == "speech-quick":
        corpus = ROOT / "data/speech-synth"
        if not (corpus / "speakers.csv").exists():
            subprocess.run([sys.executable, "-m", "cmisweep", "data", "synth-speech", "--out", str(corpus)], check=True)
        cfg = trial_config(load_space(ROOT / "search_spaces/speech-quick.yaml"), {"preset": "cmi", "gamma": 0.4, "seed": 0})
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(corpus)})})
    return TrialConfig.model_validate(read_yaml(ROOT / "search_spaces/trials/fmnist-reduced.yaml"))


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def bench(name: str, epochs: int | None, ihat_steps: int | None, fewer_steps: tuple[int, ...] = ()) -> None:
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
    fp32 = ev.model_copy(update={"ihat": ev.ihat.model_copy(update={"precision": "fp32"})})
    runs = {"I-hat (ensemble fp32)": fp32, "I-hat (new)": ev}
    for f in fewer_steps:  # the "fewer but larger steps": the same examples in 1/f of the steps
        ic = ev.ihat.model_copy(update={"steps": max(1, ev.ihat.steps // f), "batch_size": ev.ihat.batch_size * f})
        runs[f"I-hat (steps/{f}, batch x{f})"] = ev.model_copy(update={"ihat": ic})
    values = {}
    for label, e in runs.items():
        torch.manual_seed(cfg.seed + 7)
        values[label], t[label] = timed(lambda: ihat_metrics(model, data, e, cfg.seed))
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.data.modality == "image":
            rest, _ = evaluate_images(model, data, ev.model_copy(update={"ihat": None}), Path(tmp), cfg.seed)
            t["probes"], t["mCAS + sample grid"] = rest["time/probes_s"], rest["time/mcas_s"]
        else:
            t0 = time.perf_counter()
            rest, _ = evaluate_speech(model, data, ev.model_copy(update={"ihat": None}), Path(tmp), cfg.seed)
            t["EER(z), EER(s)"], t["VC-mCAS"] = rest["time/eer_s"], rest["time/vc_s"]
            t["conversion figure"] = time.perf_counter() - t0 - t["EER(z), EER(s)"] - t["VC-mCAS"]
    print(f"\n== {name}: {epochs} epochs of {len(data.train_x)} examples, I-hat {ev.ihat.seeds} seeds x "
          f"{ev.ihat.steps} steps x batch {ev.ihat.batch_size}, threads {torch.get_num_threads()}")
    print(f"training                 {t_train:8.1f} s")
    for k, v in t.items():
        print(f"{k:24} {v:8.1f} s")
    variants = tuple(k for k in t if k.startswith("I-hat (steps/"))
    base = "I-hat (ensemble fp32)"
    eval_new = sum(v for k, v in t.items() if k not in (base,) + variants)
    print(f"I-hat new (ihat.precision {ev.ihat.precision}: {'bf16' if bf16_native(data.val_x.device) else 'fp32'} here)"
          f" {t[base] / t['I-hat (new)']:.2f} x ensemble fp32")
    print(f"evaluation / training    {eval_new / t_train:8.2f}")
    for k in variants:
        print(f"{k}: {t[base] / t[k]:.2f} x ensemble fp32, evaluation / training "
              f"{(eval_new - t['I-hat (new)'] + t[k]) / t_train:.2f}")
    old = values[base]
    print(f"{'metric':16} {'fp32 mean':>11} {'std':>6}   " + "   ".join(
        f"{lab[7:-1]:>17} {'std':>6} {'|d|/std':>7}" for lab in ("I-hat (new)",) + variants))
    for k in NAMES:
        row = f"{k:16} {old[k]:11.3f} {old[k + '_std']:6.3f}   "
        for lab in ("I-hat (new)",) + variants:
            v = values[lab]
            row += f"{v[k]:17.3f} {v[k + '_std']:6.3f} {abs(v[k] - old[k]) / max(old[k + '_std'], 1e-9):7.2f}   "
        print(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["quickstart", "fmnist-reduced", "speech-quick"])
    ap.add_argument("--epochs", type=int, default=None, help="train epochs (default: the config's)")
    ap.add_argument("--ihat-steps", type=int, default=None, help="critic steps (default: the config's)")
    ap.add_argument("--fewer-steps", type=int, nargs="*", default=[], metavar="F",
                    help="also time I-hat with 1/F of the steps at F x the batch (the same examples seen)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.configs:
        bench(name, args.epochs, args.ihat_steps, tuple(args.fewer_steps))


if __name__ == "__main__":
    main()
