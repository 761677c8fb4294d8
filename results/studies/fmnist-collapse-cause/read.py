"""Read the cause test's seed blocks by PLAN.md's criteria (the numbers RUN.md quotes).

    python results/studies/fmnist-collapse-cause/read.py            # every block beside this file
    python results/studies/fmnist-collapse-cause/read.py DIR [DIR]  # or these sweep directories

Prints, per seed, both arms' test KL(z), AoLR and both reads of collapse; criterion 1's count with
the exact McNemar test; criterion 2's ratios r with the 90% sign-flip interval of the mean log r
(the two one-sided tests at 0.05, PLAN.md); and the share of VAE steps where the bound was taken.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from cmisweep.reports.curves import c_read_curves, kl_curves
from cmisweep.reports.inference import sign_flip_ci, sign_flip_p
from cmisweep.vocabulary import COLLAPSE_KL

MARGIN = (0.9, 1.1)  # criterion 2: r within 10%


def load(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.concat([pd.read_parquet(d / "trials.parquet") for d in dirs], ignore_index=True)
    epochs = pd.concat([pd.read_parquet(d / "epochs.parquet") for d in dirs], ignore_index=True)
    trials["arm"] = trials["params.regularizer.c_bound"]
    trials["kl"] = trials["final/test/kl_z"]
    trials["col_best"] = trials["kl"] < COLLAPSE_KL  # the studies' read: at the best validation epoch
    last = kl_curves(epochs, trials).set_index("name").filter(like="epoch_").ffill(axis=1).iloc[:, -1]
    trials["col_last"] = trials["name"].map(last) < COLLAPSE_KL  # PLAN.md's second read: epoch 10
    return trials, epochs


def by_arm(curves: pd.DataFrame, trials: pd.DataFrame) -> str:
    """A reports.curves table (one row per trial, epoch_1 ...) indexed by arm and seed."""
    arm = curves["name"].map(trials.set_index("name")["arm"])
    table = curves.assign(arm=arm).set_index(["arm", "seed"]).filter(like="epoch_").sort_index()
    return table.round(3).to_string()


def criterion_1(wide: pd.DataFrame, read: str) -> str:
    control, treated = wide[(read, "none")].astype(bool), wide[(read, "kl_z")].astype(bool)
    rescued, caused = int((control & ~treated).sum()), int((~control & treated).sum())
    p = binomtest(rescued, rescued + caused, 0.5).pvalue if rescued + caused else float("nan")
    return (f"{read}: the control collapsed on {int(control.sum())} of {len(control)} seeds "
            f"({sorted(control[control].index)}); the bound kept z on {rescued} of them; new collapses "
            f"under the bound {caused}; exact McNemar p {p:.3g}")


def criterion_2(wide: pd.DataFrame) -> str:
    kept = ~wide[("col_best", "none")].astype(bool)
    r = (wide[("kl", "kl_z")] / wide[("kl", "none")])[kept].astype(float)
    log_r = np.log(r.clip(lower=1e-6)).to_numpy()
    low, high = sign_flip_ci(log_r, level=0.90)
    inside = MARGIN[0] <= np.exp(log_r.mean()) <= MARGIN[1]
    lo, hi = np.exp(low), np.exp(high)
    if MARGIN[0] <= lo and hi <= MARGIN[1]:
        state = "holds, decided"
    elif hi < MARGIN[0] or lo > MARGIN[1]:  # the interval wholly outside: r within 10% is rejected
        state = "fails, decided"
    else:
        state = "holds at its estimate, not decided" if inside else "fails at its estimate, not decided"
    interval = (f"{np.exp(low):.3g} to {np.exp(high):.3g}" if np.isfinite([low, high]).all()
                else f"unbounded at n = {len(r)}")
    return (f"r on the {len(r)} control-kept seeds: {r.round(3).to_dict()}\n"
            f"geometric mean r {np.exp(log_r.mean()):.3f}, 90% interval {interval}; "
            f"sign-flip p (mean log r = 0) {sign_flip_p(log_r):.3g}: {state}")


def main(argv: list[str]) -> None:
    here = Path(__file__).resolve().parent
    dirs = [Path(a) for a in argv] or sorted(p for p in here.glob("s*-*") if p.is_dir())
    trials, epochs = load(dirs)
    wide = trials.pivot(index="seed", columns="arm",
                        values=["kl", "final/aolr", "col_best", "col_last", "final/best_epoch"])
    pd.set_option("display.width", 200)
    print(f"blocks: {[d.name for d in dirs]}\n{wide.to_string()}\n")
    print(criterion_1(wide, "col_best"), criterion_1(wide, "col_last"), criterion_2(wide), sep="\n")
    print("\nvalidation KL(z) by epoch:")
    print(by_arm(kl_curves(epochs, trials), trials))
    bounded = epochs[epochs["name"].map(trials.set_index("name")["arm"]) == "kl_z"].assign(
        seed=lambda e: e["name"].map(trials.set_index("name")["seed"]))
    print("\nshare of VAE steps bounded, by epoch (c_bound kl_z):")  # logged per epoch; no report has it
    print(bounded.pivot_table(index="seed", columns="epoch", values="train/c_bounded").round(2).to_string())
    print("\nC-hat / KL(z), epoch mean on training batches:")
    print(by_arm(c_read_curves(epochs, trials), trials))


if __name__ == "__main__":
    main(sys.argv[1:])
