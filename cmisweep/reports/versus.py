"""One sweep's points against another sweep's front (docs/design.md section 5).

The question it answers: does any point of this sweep (say CMI with alpha != gamma) lie beyond
the front that another sweep's regularizer reaches (CMI with alpha = gamma) in (min KL(z), best
score)? A point lies beyond when it adds hypervolume to that front: no point of the front is at
least as good in both KL(z) and the score. Both sweeps are read over the seeds they share, as
seed means per point (the other sweep's vanilla trials belong to its front, as in frontier.py),
and again seed by seed (a point's own trial against that seed's front). One reference point for
all hypervolumes, fixed before the data: hypervolume.reference_point (the KL cap, chance).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cmisweep.files import atomic_write, atomic_write_text  # noqa: E402
from cmisweep.reports.frontier import GROUP, KL, SCORES, seed_means  # noqa: E402
from cmisweep.reports.hypervolume import hypervolume, reference_point  # noqa: E402
from cmisweep.reports.trials import evaluated, point_means  # noqa: E402

POINT_COLUMNS = ["score", "preset", "gamma", "alpha", "kl_z", "value", "n_seeds", "hv_gain", "beyond",
                 "seeds_beyond"]
SUMMARY_COLUMNS = ["score", "front_presets", "seeds", "hv_front", "hv_with_points", "n_points", "n_beyond",
                   "ref_kl_z", "ref_value"]


def _front_rows(other: pd.DataFrame, presets: list[str]) -> pd.DataFrame:
    """The other sweep's trials on the front's curves: its presets asked for, and its vanilla trials."""
    return other[other["preset"].isin([*presets, "vanilla"])]


def against(trials: pd.DataFrame, other: pd.DataFrame, presets: list[str] | None = None,
            kl_cap: float = 50.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, summary): each point of `trials` (seed means) against the front of `other`'s
    `presets` (default: the presets of `trials` other than vanilla), per score both sweeps have."""
    t, o = evaluated(trials), evaluated(other)
    seeds = sorted(set(t["seed"]) & set(o["seed"])) if len(t) and len(o) else []
    t, o = t[t["seed"].isin(seeds)], o[o["seed"].isin(seeds)]
    presets = presets or sorted(set(t["preset"]) - {"vanilla"})
    o = _front_rows(o, presets)
    points, summary = [], []
    for column, (label, higher) in SCORES.items():
        if column not in t or column not in o or t[column].isna().all() or o[column].isna().all():
            continue
        ref = reference_point(column, kl_cap)
        om = seed_means(o, [KL, column]).dropna(subset=[KL, column])
        om = om[om["preset"].isin(presets) | (om["preset"] == "vanilla")]
        front = om[[KL, column]].to_numpy(float)
        hv_front = hypervolume(front[:, 0], front[:, 1], ref, higher)
        tm = _point_means(t, column)
        for _, r in tm.iterrows():
            gain = _gain(front, (r[KL], r[column]), ref, higher, hv_front)
            beyond_by_seed = [_seed_beyond(t, o, r, s, column, ref, higher) for s in seeds]
            points.append({"score": label, **{k: r[k] for k in GROUP}, "kl_z": r[KL], "value": r[column],
                           "n_seeds": int(r["n_seeds"]), "hv_gain": gain, "beyond": gain > 0,
                           "seeds_beyond": f"{sum(b for b in beyond_by_seed if b is not None)}/"
                                           f"{sum(b is not None for b in beyond_by_seed)}"})
        both = np.vstack([front, tm[[KL, column]].to_numpy(float)])
        summary.append({"score": label, "front_presets": ",".join(presets), "seeds": ",".join(map(str, seeds)),
                        "hv_front": hv_front, "hv_with_points": hypervolume(both[:, 0], both[:, 1], ref, higher),
                        "n_points": len(tm), "n_beyond": int(sum(p["beyond"] for p in points if p["score"] == label)),
                        "ref_kl_z": ref[0], "ref_value": ref[1]})
    return pd.DataFrame(points, columns=POINT_COLUMNS), pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def _point_means(t: pd.DataFrame, column: str) -> pd.DataFrame:
    """This sweep's points as seed means, each once (seed_means would copy vanilla into every preset)."""
    return point_means(t.dropna(subset=[KL, column]), [KL, column])


def _gain(front: np.ndarray, point: tuple[float, float], ref, higher: bool, hv_front: float) -> float:
    """The hypervolume the point adds to the front; > 0 exactly when no front point is at least
    as good in both (up to float rounding, hence the tolerance)."""
    both = np.vstack([front, np.array([point], float)])
    gain = hypervolume(both[:, 0], both[:, 1], ref, higher) - hv_front
    return float(gain) if gain > 1e-9 * max(1.0, abs(hv_front)) else 0.0


def _seed_beyond(t, o, point, seed, column, ref, higher) -> bool | None:
    """Whether the point's own trial at `seed` lies beyond that seed's front; None if either is missing."""
    mine = t[(t["seed"] == seed) & (t["preset"] == point["preset"]) & np.isclose(t["gamma"], point["gamma"])]
    alpha = point["alpha"]
    mine = mine[mine["alpha"].isna()] if pd.isna(alpha) else mine[np.isclose(mine["alpha"].astype(float), alpha)]
    front = o[o["seed"] == seed].dropna(subset=[KL, column])[[KL, column]].to_numpy(float)
    mine = mine.dropna(subset=[KL, column])
    if mine.empty or not len(front):
        return None
    hv = hypervolume(front[:, 0], front[:, 1], ref, higher)
    return _gain(front, (float(mine[KL].iloc[0]), float(mine[column].iloc[0])), ref, higher, hv) > 0


def plot(trials: pd.DataFrame, other: pd.DataFrame, points: pd.DataFrame, column: str, presets: list[str], name: str,
         other_name: str, path: Path) -> Path | None:
    """The other sweep's seed-mean curve(s) and this sweep's points, those beyond the front filled."""
    label, _ = SCORES[column]
    p = points[points["score"] == label]
    if p.empty:
        return None
    o = evaluated(other)
    o = _front_rows(o[o["seed"].isin(set(evaluated(trials)["seed"]))], presets)
    om = seed_means(o, [KL, column]).dropna(subset=[KL, column])
    om = om[om["preset"].isin(presets) | (om["preset"] == "vanilla")]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for preset, m in om.groupby("preset"):
        m = m.sort_values("gamma")  # the curve as gamma grows, as in the paper's Fig. 3
        ax.plot(m[KL], m[column], "o-", color="0.3", ms=4, lw=1, label=f"{other_name}: {preset}")
        for _, r in m.iterrows():
            ax.annotate(f"{r['gamma']:g}", (r[KL], r[column]), textcoords="offset points", xytext=(3, -9), fontsize=7,
                        color="0.3")
    for beyond, marker in ((False, "none"), (True, "tab:red")):
        q = p[p["beyond"] == beyond]
        ax.scatter(q["kl_z"], q["value"], s=36, facecolors=marker, edgecolors="tab:red", lw=1.2,
                   label=f"{name}: {'beyond' if beyond else 'not beyond'} ({len(q)})")
        for _, r in q.iterrows():
            text = f"{r['gamma']:.2g}" if pd.isna(r["alpha"]) else f"{r['gamma']:.2g}/{r['alpha']:.2g}"
            ax.annotate(text, (r["kl_z"], r["value"]), textcoords="offset points", xytext=(3, 3), fontsize=7,
                        color="tab:red")
    ax.set_xlabel("KL(z) (test, nats; seed means)")
    ax.set_ylabel(label)
    ax.set_title(f"{name}\nagainst {other_name}'s front (labels: gamma or gamma/alpha)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(trials: pd.DataFrame, other: pd.DataFrame, name: str, other_name: str, out: Path,
          presets: list[str] | None = None, kl_cap: float = 50.0) -> Path:
    """reports/versus_<other>.{md,csv} and a plot per score; returns the markdown's path."""
    points, summary = against(trials, other, presets, kl_cap)
    stem = f"versus_{other_name}"
    atomic_write(out / f"{stem}.csv", lambda p: points.to_csv(p, index=False))
    lines = [f"# {name} against the front of {other_name}", "",
             "A point lies beyond the front when it adds hypervolume to it (no front point is at least as good "
             "in both KL(z) and the score). Seed means over the seeds both sweeps share; `seeds_beyond`: the "
             "point's own trial against that seed's front.", ""]
    for _, s in summary.iterrows():
        p = points[points["score"] == s["score"]].sort_values("kl_z")
        lines += [f"## {s['score']}: {s['n_beyond']} of {s['n_points']} points beyond the front of "
                  f"{s['front_presets']} (seeds {s['seeds']})", "",
                  f"Hypervolume: front {s['hv_front']:.4g}, front and these points {s['hv_with_points']:.4g} "
                  f"(reference point KL(z) {s['ref_kl_z']:.4g}, {s['score']} {s['ref_value']:.4g}).", "",
                  p.drop(columns="score").to_markdown(index=False, floatfmt=".4g"), ""]
        column = next(c for c, (lab, _) in SCORES.items() if lab == s["score"])
        png = plot(trials, other, points, column, s["front_presets"].split(","), name, other_name,
                   out / f"{stem}_{column.split('/')[-1]}.png")
        if png is not None:
            lines += [f"![{s['score']}]({png.name})", ""]
    if summary.empty:
        lines += ["No score that both sweeps report, over seeds they share.", ""]
    atomic_write_text(out / f"{stem}.md", "\n".join(lines))
    return out / f"{stem}.md"
