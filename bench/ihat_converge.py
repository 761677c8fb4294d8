"""Converged I-hat against fixed steps on one kept model, in one run (docs/design.md section 3).

    .venv/bin/python bench/ihat_converge.py results/studies/speech-cpu-study/models/advmi_g0.4_s0.pt
                                            [--set evaluation.ihat.KEY=VALUE ...]

On the same model and data, with the trial's own I-hat settings: `steps` once with every batch
encoded afresh (pool_draws 0: the path before the pool), `steps` once from the pool, and the
doubling rule from the pool. Prints the wall time of each on one thread, the steps the rule took,
whether it settled, and each reading with its critic-seed spread. Needs the model's data
($CMISWEEP_DATA or ./data).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmisweep.data import load_dataset  # noqa: E402
from cmisweep.device import cpu_model  # noqa: E402
from cmisweep.evaluate_kept import with_settings  # noqa: E402
from cmisweep.kept_model import load_kept  # noqa: E402
from cmisweep.metrics.mutual_info import FORMS, ihat_metrics  # noqa: E402

RUNS = {"fixed steps, every batch encoded": ["evaluation.ihat.converge=false", "evaluation.ihat.pool_draws=0"],
        "fixed steps, pooled pairs": ["evaluation.ihat.converge=false"],
        "doubling rule, pooled pairs": []}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a trial's evaluation task here: one thread, two tasks at a time
    net, kept = load_kept(args.model)
    data = load_dataset(with_settings(kept, []).data, torch.device("cpu"))
    print(f"{Path(args.model).name} on {cpu_model()}, torch {torch.__version__}, 1 thread")
    base = None
    for label, sets in RUNS.items():
        cfg = with_settings(kept, sets + args.set)
        t0 = time.perf_counter()
        m = ihat_metrics(net, data, cfg.evaluation)
        wall = time.perf_counter() - t0
        base = base or wall
        settled = {1.0: "settled", 0.0: "not settled by max_steps"}.get(m.get("ihat_converged"), "")
        print(f"{label:34s} {wall:7.1f} s ({wall / base:.2f}x)  steps {m['ihat_steps']} {settled}")
        print("    " + "  ".join(f"{k[5:]} {m[k]:.3f}±{m[k + '_std']:.3f}" for k in FORMS)
              + f"  nce {m['ihat_nce']:.3f} mlp_nce {m['ihat_mlp_nce']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
