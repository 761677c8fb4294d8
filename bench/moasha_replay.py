"""MO-ASHA replayed offline on a finished sweep's per-epoch history (issue 33; docs/design.md 6.2).

    .venv/bin/python bench/moasha_replay.py results/studies/fmnist-moasha-bench/plain \
        [--grace 2 --eta 3] [--collapse-min-epoch E] [--workers 2] [--out replay.csv] \
        [--live results/studies/fmnist-moasha-bench/live] [--plot hv_cpu.png]

The sweep must have run with the per-epoch AoLR probe (trial.evaluation.epoch_probe), so that its
epochs.parquet holds val/kl_z and val/aolr. The replay feeds each epoch's readings to the same
MOASHA.decide the live scheduler runs, in the order a run on `workers` trial slots would see them:
trials start in the order they were created, each on the first free slot, epoch e of a trial ends
at its start plus its first e epochs' times (time/epoch_s, plus time/probe_s, which MO-ASHA needs
and plain NSGA-II does not), and an evaluation takes the trial's final/time/eval_s. A trial stopped
as dominated ends there, unevaluated; one stopped as collapsed is evaluated (its final numbers are
taken from the full run), and where the full run kept z after all (test KL(z) at or above the
collapse threshold) the stop is counted as a wrong collapse call. What it cannot replay: the points a searcher would
have proposed after seeing fewer finished trials (the live run measures that).

It prints which trials would have stopped and why, the CPU and the wall time of both, how well each
rung's readings rank the trials as their final values do (Spearman), and the hypervolume of the
seed-mean front kept against the full run's, at the reports' fixed reference point. With --live (a
finished MO-ASHA sweep of the same space), it prints the hypervolume against CPU time of the plain
run, the replay and the live run, on the same slot model (the live run's trials end where its
history does, probe included).
"""
from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmisweep.analysis import kl_cap  # noqa: E402
from cmisweep.reports.hypervolume import hypervolume, reference_point  # noqa: E402
from cmisweep.reports.trials import point_means  # noqa: E402
from cmisweep.sweep.moasha import MOASHA, per_epoch, point_key, rungs  # noqa: E402
from cmisweep.sweep.space import load_space  # noqa: E402
from cmisweep.vocabulary import COLLAPSE_KL  # noqa: E402

OBJECTIVES = [("final/test/kl_z", "min"), ("final/aolr", "max")]


def point_of(row: pd.Series) -> dict:
    alpha = row.get("alpha")
    return {"preset": row["preset"], "gamma": row["gamma"], "alpha": None if pd.isna(alpha) else alpha,
            "seed": int(row["seed"])}


def replay(trials: pd.DataFrame, epochs: pd.DataFrame, *, max_t: int, grace: int, eta: float,
           collapse_min_epoch: int | None, ref: list[float], workers: int) -> pd.DataFrame:
    """Per trial: stopped_at (NaN: ran to the end), why, start, cpu_s and end_s under MO-ASHA, and
    start_full, cpu_s_full and end_s_full without it (the same slots, no probe time); wrong_collapse:
    stopped as collapsed, yet its full run kept z (test KL(z) at or above the collapse threshold)."""
    s = MOASHA(sweep="replay", objectives=OBJECTIVES, ref=ref, max_t=max_t, grace_period=grace,
               reduction_factor=eta, evaluate_stopped=False, collapse_min_epoch=collapse_min_epoch, records=None)
    order = list(trials.sort_values("trial_id")["trial_id"])
    keys = {r["trial_id"]: point_key({"point": point_of(r)}) for _, r in trials.iterrows()}
    eval_s = trials.set_index("trial_id")["final/time/eval_s"].fillna(0.0).astype(float)
    per = {tid: e.sort_values("epoch").set_index("epoch") for tid, e in epochs.groupby("trial_id")}

    def decide(tid: str, epoch: int) -> str | None:
        row = per[tid].loc[epoch]
        return s.decide(tid, keys[tid], {"epoch": epoch, "val/kl_z": row["val/kl_z"], "val/aolr": row["val/aolr"]})

    mo = simulate(order, per, eval_s, workers, decide)
    full = simulate(order, per, eval_s, workers, None).rename(
        columns={"start": "start_full", "cpu_s": "cpu_s_full", "end_s": "end_s_full"})
    out = mo.join(full[["start_full", "cpu_s_full", "end_s_full"]]).rename_axis("trial_id").reset_index()
    final_kl = out["trial_id"].map(trials.set_index("trial_id")["final/test/kl_z"])
    out["wrong_collapse"] = (out["why"] == "collapsed") & (final_kl >= COLLAPSE_KL)
    return out


def simulate(order: list[str], per: dict, eval_s: pd.Series, workers: int, decide,
             probe: bool | None = None) -> pd.DataFrame:
    """Trials run in `order` on `workers` slots, each epoch ending at its start plus the epochs'
    times (plus the probe's where `probe`, by default where `decide`, MO-ASHA's, reads it);
    decide(trial, epoch) -> a stop reason or None. A trial ends at its last epoch or its stop, plus
    its evaluation unless dominated."""
    probe = decide is not None if probe is None else probe
    events: list[tuple[float, int, str, int]] = []  # (time, tiebreak, trial, epoch)
    queue, out, n = list(order), {}, 0

    def start(tid: str, at: float) -> None:
        nonlocal n
        e = per[tid]
        spent = e["time/epoch_s"] + (e["time/probe_s"].fillna(0) if probe else 0)
        for epoch, t_end in zip(e.index, at + spent.cumsum()):
            heapq.heappush(events, (float(t_end), n, tid, int(epoch)))
            n += 1
        out[tid] = {"start": at}

    for _ in range(min(workers, len(queue))):
        start(queue.pop(0), 0.0)
    while events:
        t, _, tid, epoch = heapq.heappop(events)
        if "end_s" in out[tid]:
            continue  # stopped before this epoch
        why = decide(tid, epoch) if decide is not None else None
        if why is None and epoch != per[tid].index.max():
            continue
        end = t + (float(eval_s[tid]) if why != "dominated" else 0.0)
        out[tid].update(end_s=end, cpu_s=end - out[tid]["start"], stopped_at=epoch if why else np.nan, why=why)
        if queue:
            start(queue.pop(0), end)
    return pd.DataFrame.from_dict(out, orient="index")


def rank_agreement(trials: pd.DataFrame, epochs: pd.DataFrame, at: list[int]) -> pd.DataFrame:
    """Spearman's rho between each objective's per-epoch reading at a rung and its final value,
    over the trials with both: how well the rung ranks the trials as the end does."""
    rows = []
    final = trials.set_index("trial_id")
    for epoch in at:
        e = epochs[epochs["epoch"] == epoch].set_index("trial_id")
        row = {"epoch": epoch}
        for metric, _ in OBJECTIVES:
            both = pd.concat([e[per_epoch(metric)], final[metric]], axis=1, join="inner").dropna()
            row[f"rho {per_epoch(metric)} ~ {metric}"] = spearmanr(both.iloc[:, 0], both.iloc[:, 1])[0] if len(both) > 2 else np.nan
            row["trials"] = len(both)
        rows.append(row)
    return pd.DataFrame(rows)


def front_hypervolume(trials: pd.DataFrame, ref: list[float]) -> float:
    """The hypervolume of the seed means of the evaluated trials (minimize KL(z), maximize AoLR)."""
    columns = [o for o, _ in OBJECTIVES]
    m = point_means(trials, columns)
    if not set(columns) <= set(m.columns):
        return 0.0  # nothing evaluated
    m = m.dropna(subset=columns)
    return hypervolume(m[OBJECTIVES[0][0]].to_numpy(), m[OBJECTIVES[1][0]].to_numpy(), tuple(ref), higher=True)


def hypervolume_over_cpu(trials: pd.DataFrame, timeline: pd.DataFrame, ref: list[float]) -> pd.DataFrame:
    """At each trial's end (timeline: start and end_s per trial_id, and why: 'dominated' where
    it ended unevaluated), the CPU seconds spent by then on every slot and the hypervolume of the
    trials evaluated by then: the front a user would have had at that cost."""
    t = timeline.assign(evaluated=timeline.get("why", pd.Series(index=timeline.index, dtype=object)) != "dominated")
    rows = [{"cpu_s": 0.0, "hypervolume": 0.0}]
    for end in sorted(t["end_s"].unique()):
        cpu = (t["end_s"].clip(upper=end) - t["start"]).clip(lower=0).sum()
        done = t.index[(t["end_s"] <= end) & t["evaluated"]]
        rows.append({"cpu_s": float(cpu), "hypervolume": front_hypervolume(trials[trials["trial_id"].isin(done)], ref)})
    return pd.DataFrame(rows)


def live_timeline(d: Path, workers: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished live MO-ASHA sweep's trials and its timeline on the slot model: each trial runs the
    epochs it ran (probe included) and its evaluation where it had one."""
    trials, epochs = pd.read_parquet(d / "trials.parquet"), pd.read_parquet(d / "epochs.parquet")
    per = {tid: e.sort_values("epoch").set_index("epoch") for tid, e in epochs.groupby("trial_id")}
    trials = trials[trials["trial_id"].isin(list(per))]
    eval_s = trials.set_index("trial_id")["final/time/eval_s"].fillna(0.0).astype(float)
    timeline = simulate(list(trials.sort_values("trial_id")["trial_id"]), per, eval_s, workers, None, probe=True)
    return trials, timeline


def at_cpu(curve: pd.DataFrame, cpu_s: float) -> float:
    """The hypervolume a curve had once cpu_s were spent (not its best so far: a point's second seed
    can move its mean off the front)."""
    return float(curve.loc[curve["cpu_s"] <= cpu_s, "hypervolume"].iloc[-1])


def compare(curves: dict[str, pd.DataFrame], plot: str | None) -> None:
    """Hypervolume against CPU hours, at tenths of the plain run's CPU, and the CPU each arm took to
    reach the plain run's final hypervolume (within 1%)."""
    full = curves["plain NSGA-II"]
    total, final = full["cpu_s"].max(), full["hypervolume"].iloc[-1]
    if not final:
        print("\nthe plain run has no evaluated front: no hypervolume to compare against")
        return
    rows = [{"CPU h": f * total / 3600, **{name: at_cpu(c, f * total) for name, c in curves.items()}}
            for f in np.linspace(0.1, 1.0, 10)]
    print("\nhypervolume of the seed-mean front against CPU time (slot model):")
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.4f"))
    for name, c in curves.items():
        reach = c.loc[c["hypervolume"] >= 0.99 * final, "cpu_s"]
        when = f"{reach.min() / 3600:.2f} h ({reach.min() / total:.2f}x the plain run's CPU)" if len(reach) else "never"
        print(f"  {name}: {c['cpu_s'].max() / 3600:.2f} h in all, final hypervolume {c['hypervolume'].iloc[-1]:.4f}; "
              f"99% of the plain run's final reached at {when}")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, c in curves.items():
            ax.step(c["cpu_s"] / 3600, c["hypervolume"], where="post", label=name)
        ax.set_xlabel("CPU hours (slot model)")
        ax.set_ylabel("hypervolume, KL(z) vs AoLR")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"  plot: {plot}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="a finished sweep directory with space.yaml, trials.parquet and epochs.parquet")
    ap.add_argument("--grace", type=int, default=2)
    ap.add_argument("--eta", type=float, default=3.0)
    # none by default: at the image study's 10 epochs a trial rose from below the threshold at epoch 8
    ap.add_argument("--collapse-min-epoch", type=int, default=None)  # docs/design.md 6.2
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--live", help="a finished MO-ASHA sweep of the same space: hypervolume against CPU for all three")
    ap.add_argument("--plot", help="with --live, where to draw the hypervolume against CPU time (PNG)")
    args = ap.parse_args()
    d = Path(args.sweep)
    space = load_space(d / "space.yaml", stored=True)
    trials, epochs = pd.read_parquet(d / "trials.parquet"), pd.read_parquet(d / "epochs.parquet")
    missing = [per_epoch(m) for m, _ in OBJECTIVES if per_epoch(m) not in epochs]
    if missing:
        print(f"{d / 'epochs.parquet'}: no {', '.join(missing)} per epoch (run the sweep with "
              "trial.evaluation.epoch_probe set)", file=sys.stderr)
        return 2
    ref = list(reference_point(OBJECTIVES[1][0], kl_cap(space.analysis, space.trial.data.dataset)))
    max_t = space.trial.train.epochs
    r = replay(trials, epochs, max_t=max_t, grace=args.grace, eta=args.eta,
               collapse_min_epoch=args.collapse_min_epoch, ref=ref, workers=args.workers)
    table = trials[["trial_id", "name", "gamma", "alpha", "seed", "final/test/kl_z", "final/aolr"]].merge(r, on="trial_id")
    print(table.drop(columns=["start", "start_full"]).to_string(index=False, float_format="%.3f"))
    kept = trials[~trials["trial_id"].isin(r.loc[r["why"] == "dominated", "trial_id"])]
    hv_full, hv_kept = front_hypervolume(trials, ref), front_hypervolume(kept, ref)
    collapse = f"collapse from epoch {args.collapse_min_epoch}" if args.collapse_min_epoch else "no collapse stop"
    print(f"\nMO-ASHA (grace {args.grace}, eta {args.eta:g}, rungs {rungs(args.grace, args.eta, max_t)}, {collapse}) "
          f"on {args.workers} slots, replayed on {len(trials)} trials of {d.name}:")
    wrong = int(r["wrong_collapse"].sum())
    print(f"  stopped: {(r['why'] == 'dominated').sum()} dominated, {(r['why'] == 'collapsed').sum()} collapsed "
          f"({wrong} of them kept z by the end of the full run: wrong collapse calls)")
    print(f"  CPU: {r['cpu_s'].sum() / 3600:.2f} h against {r['cpu_s_full'].sum() / 3600:.2f} h "
          f"({r['cpu_s'].sum() / r['cpu_s_full'].sum():.2f}x); wall {r['end_s'].max() / 60:.0f} min against "
          f"{r['end_s_full'].max() / 60:.0f} min")
    print(f"  hypervolume of the seed-mean front (ref KL {ref[0]:g}, AoLR {ref[1]:g}): {hv_kept:.4f} kept against "
          f"{hv_full:.4f} ({hv_kept / hv_full:.3f}x)" if hv_full else "  no evaluated front")
    # seed noise: the same front read from each seed alone (the unit of replication)
    by_seed = [f"seed {k}: {front_hypervolume(trials[trials['seed'] == k], ref):.4f} full, "
               f"{front_hypervolume(kept[kept['seed'] == k], ref):.4f} kept" for k in sorted(trials["seed"].unique())]
    print(f"  seed noise, each seed's front alone: {'; '.join(by_seed)}")
    print("\nhow each rung's readings rank the trials as their final values do:")
    print(rank_agreement(trials, epochs, rungs(args.grace, args.eta, max_t)).to_string(index=False, float_format="%.3f"))
    if args.out:
        table.to_csv(args.out, index=False)
    if args.live:
        live_epochs = Path(args.live) / "epochs.parquet"
        if not live_epochs.exists() or "time/probe_s" not in pd.read_parquet(live_epochs):
            print(f"{live_epochs}: no per-epoch history with time/probe_s (a finished MO-ASHA sweep?)", file=sys.stderr)
            return 2
        full = r.set_index("trial_id")[["start_full", "end_s_full"]].rename(
            columns={"start_full": "start", "end_s_full": "end_s"})
        live_trials, live = live_timeline(Path(args.live), args.workers)
        compare({"plain NSGA-II": hypervolume_over_cpu(trials, full, ref),
                 "MO-ASHA replayed": hypervolume_over_cpu(trials, r.set_index("trial_id"), ref),
                 "MO-ASHA live": hypervolume_over_cpu(live_trials, live, ref)}, args.plot)
        alone = [f"seed {k}: {front_hypervolume(live_trials[live_trials['seed'] == k], ref):.4f}"
                 for k in sorted(live_trials["seed"].unique())]
        print(f"  the live run's seed noise, each seed's front alone: {'; '.join(alone)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
