"""Inference a reviewer would accept (docs/design.md 5.2): synthetic sweeps with a known answer,
written as a committed sweep's files (space.yaml, trials.parquet) and judged by `cmisweep report`
on that directory, with no Tune state."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from cmisweep.cli import main
from cmisweep.reports.inference import sign_flip_ci, sign_flip_p, smallest_p

GAMMAS = (0.2, 0.4, 0.6, 0.8)


def sweep(seeds, gain_of_seed, noise=0.002, presets=("beta", "cmi"), alphas=(None,)) -> pd.DataFrame:
    """beta and cmi at four gammas: AoLR = 0.7 + noise, cmi's + gain_of_seed(seed); KL(z) 10 + gamma."""
    rng = np.random.default_rng(1)
    rows = []
    for preset in presets:
        for alpha in (alphas if preset == "cmi" else (None,)):
            for gamma in GAMMAS:
                for seed in seeds:
                    gain = gain_of_seed(seed) if preset == "cmi" else 0.0
                    name = f"{preset}_g{gamma:g}" + (f"_a{alpha:g}" if alpha is not None else "") + f"_s{seed}"
                    rows.append({"trial_id": f"{name}-id", "name": name, "status": "FINISHED", "preset": preset,
                                 "gamma": gamma, "alpha": alpha, "seed": seed,
                                 "final/test/kl_z": 10.0 + gamma + 0.01 * seed,
                                 "final/aolr": 0.7 + gain + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def report(tmp_path, trials: pd.DataFrame, analysis: dict | None = None, name: str = "synthetic") -> dict:
    d = tmp_path / name
    d.mkdir()
    space = {"name": name, "trial": {"data": {"dataset": "fashion-mnist"}},
             "search": {"presets": sorted(set(trials["preset"])), "gamma": list(GAMMAS),
                        "seeds": sorted(int(s) for s in set(trials["seed"]))}}
    if analysis:
        space["analysis"] = analysis
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    trials.to_parquet(d / "trials.parquet", index=False)
    assert main(["report", str(d)]) == 0
    read = {f.stem: pd.read_csv(f) for f in (d / "reports").glob("*.csv")}
    read["trials"] = pd.read_parquet(d / "trials.parquet")
    read["report.md"] = (d / "reports" / "report.md").read_text()
    return read


def aolr(claims: pd.DataFrame) -> pd.DataFrame:
    return claims[claims["claim"] == "higher AoLR at the same gamma"]


def test_a_gain_carried_by_one_seed_of_three_is_not_reproduced(tmp_path):
    # seed 0 gains 0.2 at every gamma, seeds 1 and 2 nothing: a trial-level t-test over the 12
    # pairs gives p ~0.04; with the seed as the unit nothing this small can be decided
    out = report(tmp_path, sweep(range(3), lambda s: 0.2 if s == 0 else 0.0))
    row = aolr(out["claims"]).iloc[0]
    assert row["n_seeds"] == 3 and row["n_pairs"] == 12
    assert row["verdict"] == "undecidable at n = 3"
    assert row["p_min"] == pytest.approx(0.25) and not np.isfinite(row["ci_low"])
    assert "undecidable at n = 3" in out["report.md"] and "no claim can be decided at this n" in out["report.md"]


def test_a_gain_carried_by_one_seed_of_ten_is_inconclusive(tmp_path):
    out = report(tmp_path, sweep(range(10), lambda s: 0.2 if s == 0 else 0.0))
    row = aolr(out["claims"]).iloc[0]
    assert row["verdict"] == "inconclusive" and row["p"] > 0.5


def test_a_steady_small_gain_over_ten_seeds_is_reproduced(tmp_path):
    out = report(tmp_path, sweep(range(10), lambda s: 0.01))
    row = aolr(out["claims"]).iloc[0]
    assert row["verdict"] == "reproduced" and row["n_seeds"] == 10
    assert row["p"] == pytest.approx(2 / 2**10) and row["p_holm"] < 0.05
    assert row["ci_low"] > 0 and row["ci_low"] < 0.01 < row["ci_high"]
    assert row["family"].startswith("post hoc")


def test_duplicated_trials_do_not_inflate_n(tmp_path):
    t = sweep(range(3), lambda s: 0.01)
    again = t[(t["preset"] == "cmi") & (t["seed"] == 0)].assign(trial_id=lambda d: d["trial_id"] + "-again")
    out = report(tmp_path, pd.concat([t, again], ignore_index=True))
    row = aolr(out["claims"]).iloc[0]
    assert row["n_seeds"] == 3 and row["n_pairs"] == 12
    stored = out["trials"]
    assert len(stored) == len(t) + 4  # kept in trials.parquet, marked
    assert set(stored.loc[stored["repeat_of"].notna(), "trial_id"]) == set(again["trial_id"])
    rates = out["collapse"].set_index(["preset", "gamma"])
    assert (rates.loc["cmi", "n_trials"] == 3).all() and (rates.loc["cmi", "n_seeds"] == 3).all()
    assert "repeats cmi_g0.2_s0" in out["report.md"]


def test_each_cmi_variant_is_its_own_comparison_in_the_family(tmp_path):
    t = sweep(range(10), lambda s: 0.01, alphas=(0.3, 0.6))
    out = report(tmp_path, t, analysis={"family": [{"claim": "aolr", "baseline": "beta"}]})
    claims = out["claims"]
    assert sorted(claims["comparison"]) == ["cmi (alpha=0.3)", "cmi (alpha=0.6)"]
    assert (claims["n_pairs"] == 40).all() and (claims["family"] == "declared").all()
    # Holm over both: the smaller p doubled
    assert claims["p_holm"].min() == pytest.approx(min(1.0, 2 * claims["p"].min()))


def test_the_hypervolume_reference_does_not_move_with_the_data(tmp_path):
    a = report(tmp_path, sweep(range(3), lambda s: 0.01), name="a")
    t = sweep(range(3), lambda s: 0.01)
    t["final/test/kl_z"] *= 3
    t["final/aolr"] -= 0.3
    b = report(tmp_path, t, analysis={"kl_cap": 50.0}, name="b")
    for out in (a, b):
        hv = out["hypervolume"]
        assert len(hv) and (hv["ref_kl_z"] == 50.0).all() and (hv["ref_value"] == 0.1).all()
    c = report(tmp_path, t, analysis={"kl_cap": 80.0}, name="c")
    assert (c["hypervolume"]["ref_kl_z"] == 80.0).all()


def test_a_collapsed_trial_counts_once_and_stays_in_the_score_tests(tmp_path):
    t = sweep(range(10), lambda s: 0.01)
    lost = (t["preset"] == "cmi") & (t["seed"] == 0) & (t["gamma"] == 0.6)
    t.loc[lost, ["final/test/kl_z", "final/aolr"]] = [0.01, 0.1]
    out = report(tmp_path, t)
    assert out["trials"]["collapsed"].sum() == 1 and bool(out["trials"].loc[lost, "collapsed"].iloc[0])
    rates = out["collapse"].set_index(["preset", "gamma"])
    assert rates.loc[("cmi", 0.6), "collapsed"] == 1 and rates.loc[("cmi", 0.6), "n_trials"] == 10
    row = aolr(out["claims"]).iloc[0]
    assert row["n_pairs"] == 40 and row["collapsed_ref"] == 1  # not dropped
    # seed 0's mean difference carries the collapse: (3 x 0.01 - 0.6) / 4, the others 0.01
    assert row["estimate"] == pytest.approx((9 * 0.01 + (3 * 0.01 - 0.6) / 4) / 10, abs=0.002)
    assert row["estimate_no_collapse"] == pytest.approx(0.01, abs=0.002)
    mc = out["collapse_tests"].iloc[0]
    assert mc["only_reference"] == 1 and mc["only_baseline"] == 0 and mc["p_mcnemar"] == pytest.approx(1.0)


def test_a_declared_family_is_checked_at_the_edge(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "space.yaml").write_text(yaml.safe_dump({
        "name": "bad", "trial": {"data": {"dataset": "fashion-mnist"}}, "search": {"presets": ["beta", "cmi"]},
        "analysis": {"family": [{"claim": "eer_z", "baseline": "beta"}]}}))
    sweep(range(2), lambda s: 0.0).to_parquet(d / "trials.parquet", index=False)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "space.yaml" in err[0] and "eer_z" in err[0] and "image" in err[0]
    assert not (d / "reports").exists()


def test_sign_flip_test_and_interval():
    assert smallest_p(3) == 0.25 and smallest_p(3, two_sided=False) == 0.125
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)  # all positive: the smallest p of 3 seeds
    assert sign_flip_p([1.0, -1.0, 1.0, -1.0]) == pytest.approx(1.0)
    d = np.array([0.8, 1.2, 1.0, 0.9, 1.1, 1.05, 0.95, 1.0, 0.85, 1.15])
    lo, hi = sign_flip_ci(d)
    assert lo < d.mean() < hi and sign_flip_p(d - lo) == pytest.approx(0.05, abs=0.01)
    assert sign_flip_ci([1.0, 2.0, 3.0]) == (-np.inf, np.inf)


@pytest.mark.parametrize("seeds, words", [(3, "undecidable at n = 3 whatever the data"), (8, "can be decided")])
def test_the_dry_run_says_what_the_seeds_can_decide(tmp_path, seeds, words):
    from cmisweep.sweep.plan import decidable
    from cmisweep.sweep.space import load_space

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "search": {"presets": ["beta", "cmi"], "seeds": list(range(seeds))},
                                 "analysis": {"family": [{"claim": c, "baseline": "beta"} for c in
                                                         ("aolr", "mcas", "ihat", "kl_ratio")]}}))
    line = decidable(load_space(p))
    assert words in line and "p < 0.0125" in line and "the floor is 8 seeds" in line  # 2^(1-8) < 0.05 / 4 < 2^(1-7)


def test_a_damaged_epochs_parquet_is_one_line_and_nothing_written(tmp_path, capsys):
    d = tmp_path / "damaged"
    d.mkdir()
    (d / "space.yaml").write_text(yaml.safe_dump({"name": "damaged", "search": {"presets": ["beta", "cmi"]}}))
    sweep(range(2), lambda s: 0.0).to_parquet(d / "trials.parquet", index=False)
    (d / "epochs.parquet").write_bytes(b"not parquet")
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs.parquet" in err[0] and not (d / "reports").exists()
