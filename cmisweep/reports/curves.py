"""Per-epoch validation KL(z) of every trial (docs/design.md 5.1): how a collapse develops, and when
a trial that keeps z can still be told from one that does not. kl_curves.csv holds one row per
trial (its preset, gamma, seed, searched params, whether it ended collapsed) and one column per
epoch; kl_curves.png draws them on a log scale, collapsed trials dashed, trials stopped before
evaluation (no verdict either way) dotted, with the collapse threshold.

c_read_curves.csv, the same rows for the trials whose D_c reads C in the VAE step: C-hat over
KL(z) on the training batches per epoch. For the PixelCNN-VAE (s a function of x) the paper form's
C = I(z;s) + KL(q(z)||p(z)) cannot exceed KL(z) = I(x;z) + KL(q(z)||p(z)), so a share above 1 is
the critic reading more than there is, and -J's pull on z exceeds a vanilla VAE's (docs/design.md
5.5, the image study's collapse)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cmisweep.reports.plots import COLORS  # noqa: E402
from cmisweep.reports.trials import point_columns  # noqa: E402
from cmisweep.vocabulary import COLLAPSE_KL  # noqa: E402

CURVE = "val/kl_z"
C_READ = ("train/c_hat", "train/kl_z")  # the VAE step's read of C, and the KL(z) that bounds it


def _per_epoch(epochs: pd.DataFrame, values: pd.Series, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its name, searched point (reports.trials.point_columns), seed, whether it
    ended collapsed, and `values` (one per epochs row) at each epoch (epoch_1, ...)."""
    wide = epochs.assign(curve_value=values).dropna(subset=["curve_value"]).pivot_table(
        index="name", columns="epoch", values="curve_value", aggfunc="last")
    wide.columns = [f"epoch_{int(e)}" for e in wide.columns]
    point = point_columns(trials)
    keys = [c for c in ["name", *point, "seed", "collapsed"] if c in trials]
    return trials[keys].merge(wide.reset_index(), on="name", how="inner").sort_values([*point, "seed"])


def kl_curves(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's validation KL(z) at each epoch, beside its point, seed and collapse flag."""
    if epochs is None or epochs.empty or CURVE not in epochs:
        return pd.DataFrame(columns=["name", "seed", "collapsed"])
    return _per_epoch(epochs, epochs[CURVE], trials)


def c_read_curves(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each D_c trial's C-hat / KL(z) on the training batches at each epoch (module docstring)."""
    c_hat, kl = C_READ
    if epochs is None or epochs.empty or c_hat not in epochs or epochs[c_hat].isna().all():
        return pd.DataFrame(columns=["name", "seed", "collapsed"])
    return _per_epoch(epochs, epochs[c_hat] / epochs[kl], trials)


def plot_kl_curves(curves: pd.DataFrame, path: Path) -> Path | None:
    epochs = [c for c in curves if c.startswith("epoch_")]
    if curves.empty or not epochs:
        return None
    x = [int(c.split("_")[1]) for c in epochs]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    seen = set()
    for _, r in curves.iterrows():
        lost = r.get("collapsed", pd.NA)
        style = ":" if pd.isna(lost) else "--" if lost else "-"
        label = None if r["preset"] in seen else r["preset"]
        seen.add(r["preset"])
        ax.plot(x, r[epochs].astype(float).clip(lower=1e-4), color=COLORS.get(r["preset"]), lw=1,
                ls=style, alpha=0.8, label=label)
    ax.axhline(COLLAPSE_KL, color="0.5", lw=0.8, ls="-.", label=f"collapse ({COLLAPSE_KL:g} nats)")
    ax.set(yscale="log", xlabel="epoch", ylabel="validation KL(z) [nats]", xticks=x)
    ax.legend(fontsize=7)
    ax.set_title("KL(z) per epoch, one line per trial (dashed: collapsed, dotted: not evaluated)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
