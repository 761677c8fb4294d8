"""Each I-hat head and form against analytic I, at a study's shapes and settings (docs/design.md 3.2).

    .venv/bin/python bench/ihat_truth.py --space results/studies/speech-cpu-study/space.yaml
                                         [--set evaluation.ihat.KEY=VALUE ...] [--out truth.csv]

Reads the study's `trial.evaluation` (I-hat's seeds, steps, doubling rule, encodings, width, lr),
builds the worlds of cmisweep.metrics.ihat_truth at its modality's shapes (z 32 and s (8, 28, 28)
for images, z 64 and s (20, 64) for speech; I(z;s) 0.5, 2, 4 nats with KL(q(z)||p(z)) 0, 1, 2),
and prints each reading's estimate against its target, whether it met the bound (0.1 nats below
1 nat, 15% above), the steps the doubling rule took and the time. A reading carries a verdict
(analysis.VERDICT_READINGS) only if it met the bound in every world. Beside them, what the study's
n_train encodings allow at best: the informed Gaussian plug-in (ihat_truth.informed_plugin) at
that n, and at 10x it (--plugin-only: that line alone, in seconds).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmisweep.config import EvalConfig  # noqa: E402
from cmisweep.configio import apply_overrides  # noqa: E402
from cmisweep.device import cpu_model  # noqa: E402
from cmisweep.metrics.ihat_truth import LEVELS, World, informed_plugin, measure, within_bound  # noqa: E402
from cmisweep.vocabulary import modality  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--levels", default=",".join(f"{i}:{k}" for i, k in LEVELS), help="I:KL pairs")
    ap.add_argument("--out")
    ap.add_argument("--plugin-only", action="store_true", help="print the informed plug-in's line alone")
    args = ap.parse_args()
    trial = yaml.safe_load(Path(args.space).read_text())["trial"]
    evaluation = apply_overrides({"evaluation": trial["evaluation"]}, args.set, "--set")["evaluation"]
    evaluation = {k: v for k, v in evaluation.items() if k in EvalConfig.model_fields and k != "defer"}
    cfg = EvalConfig(**evaluation)
    kind = modality(trial["data"]["dataset"])
    torch.set_num_threads(1)  # as a trial's evaluation runs here: one thread a trial, two at a time
    rows = []
    for level in args.levels.split(","):
        mi, kl = map(float, level.split(":"))
        world, n = World(kind, mi, kl), cfg.ihat.n_train
        at_n, at_10n = informed_plugin(world, n), informed_plugin(world, 10 * n)
        print(f"I = {mi}: informed plug-in {at_n:.3f} at n = {n} ({'within' if within_bound(at_n, mi) else 'outside'} "
              f"the bound), {at_10n:.3f} at n = {10 * n}", flush=True)
        if args.plugin_only:
            continue
        t0 = time.perf_counter()
        out = measure(world, cfg)
        for r in out:
            r["time_s"] = time.perf_counter() - t0
        rows += out
        print(pd.DataFrame(out).drop(columns=["modality"]).to_string(index=False, float_format="%.3f"), flush=True)
    if args.plugin_only:
        return 0
    table = pd.DataFrame(rows)
    print(f"\n{kind} ({cpu_model()}, torch {torch.__version__}, 1 thread); I-hat: {cfg.ihat.model_dump()}")
    for column, rows in table.groupby("column"):
        rel = rows["estimate"] / rows["target"]
        print(f"  {column:24s} meets its bound in {int(rows['within'].sum())} of {len(rows)} worlds"
              f"{' (carries a verdict)' if rows['within'].all() else ' (no verdict)'}; "
              f"estimate/target {rel.min():.2f}-{rel.max():.2f}")
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
