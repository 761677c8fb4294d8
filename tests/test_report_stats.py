"""The reports' statistics: hypervolume of each front (pymoo) with bootstrap intervals, matched-KL
interpolation along each seed's front, Holm's correction, and the claims' verdicts. Synthetic
trials whose answers are known by construction."""
import numpy as np
import pandas as pd
import pytest

from cmisweep.reports import markdown
from cmisweep.reports.claims import judge
from cmisweep.reports.frontier import frontier, matched_kl_interpolated
from cmisweep.reports.hypervolume import hypervolume, hypervolumes, reference_point, robustness, with_reference
from cmisweep.reports.tables import paired_tests
from cmisweep.reports.trials import prepare


def row(preset, gamma, seed, kl, aolr, **more):
    return {"name": f"{preset}_g{gamma}_s{seed}", "status": "FINISHED", "preset": preset, "gamma": gamma,
            "alpha": None, "seed": seed, "final/test/kl_z": kl, "final/aolr": aolr, **more}


def linear_sweep(cmi_gain=0.05, noise=0.0, seeds=(0, 1, 2)) -> pd.DataFrame:
    """beta and cmi on the line aolr = 0.5 + 0.02 KL (cmi shifted up by cmi_gain), KL = 10 - 10 gamma;
    per-seed noise on aolr and I-hat (fixed draws) when asked. cmi's mCAS is beta's +-0.01 in turn
    over the gammas: no effect, with spread."""
    rng = np.random.default_rng(0)
    rows = []
    for preset, gain in (("beta", 0.0), ("cmi", cmi_gain)):
        for gamma in (0.2, 0.4, 0.6, 0.8):
            for seed in seeds:
                kl = 10.0 - 10.0 * gamma + 0.1 * seed
                ihat = 2.0 - 10 * gain + noise * rng.standard_normal()
                rows.append(row(preset, gamma, seed, kl, 0.5 + 0.02 * kl + gain + noise * rng.standard_normal(),
                                **{"final/ihat_paper": ihat, "final/ihat_mlp_exact": ihat,
                                   "final/mcas": 0.6 + (0.01 * (-1) ** round(5 * gamma) if preset == "cmi" else 0)}))
    return pd.DataFrame(rows)


def test_hypervolume_is_the_dominated_area():
    # two points, minimize KL, maximize the score, ref (10, 0): a staircase of two rectangles
    hv = hypervolume(np.array([2.0, 6.0]), np.array([0.5, 0.8]), (10.0, 0.0), higher=True)
    assert hv == pytest.approx((10 - 2) * 0.5 + (10 - 6) * (0.8 - 0.5))
    # a dominated point adds nothing; a point beyond the reference adds nothing
    assert hypervolume(np.array([2.0, 6.0, 7.0, 11.0]), np.array([0.5, 0.8, 0.4, 0.9]), (10.0, 0.0), True) == \
        pytest.approx(hv)
    # lower-is-better scores (EER) are flipped, not mirrored wrongly
    assert hypervolume(np.array([2.0]), np.array([0.1]), (10.0, 0.5), higher=False) == pytest.approx(8 * 0.4)


def test_hypervolumes_rank_the_better_front_and_store_the_reference():
    t = linear_sweep(cmi_gain=0.05, noise=0.01, seeds=range(5))
    hv = hypervolumes(t, kl_cap=20.0, n_boot=100).set_index(["preset", "score"])
    cmi, beta = hv.loc[("cmi", "AoLR")], hv.loc[("beta", "AoLR")]
    assert cmi["hypervolume"] > beta["hypervolume"]
    for r in (cmi, beta):
        # 5 seeds: 126 distinct resamples, enough for an interval; the seeds differ, so it has width
        assert r["resamples"] == 126 and r["n_seeds"] == 5
        assert r["ci_low"] <= r["hypervolume"] <= r["ci_high"] and r["ci_high"] > r["ci_low"]
    ref = reference_point("final/aolr", 20.0)
    assert ref == (20.0, 0.1)  # the cap and chance (ten classes): stated, not read from the data
    assert (cmi["ref_kl_z"], cmi["ref_value"]) == pytest.approx(ref)
    front = with_reference(frontier(t), hypervolumes(t, kl_cap=20.0, n_boot=10))
    aolr = front[front["score"] == "AoLR"]
    assert len(aolr) and np.allclose(aolr[["ref_kl_z", "ref_value"]].to_numpy(), ref)


def test_three_seeds_get_no_bootstrap_interval():
    hv = hypervolumes(linear_sweep(noise=0.01), kl_cap=20.0, n_boot=50)
    assert (hv["resamples"] == 10).all() and hv["ci_low"].isna().all() and hv["ci_high"].isna().all()


def test_identical_seeds_give_an_interval_of_zero_width():
    t = linear_sweep(noise=0.0, seeds=range(5))
    kl = 10.0 - 10.0 * t["gamma"]
    t = t.assign(**{"final/test/kl_z": kl, "final/aolr": 0.5 + 0.02 * kl})  # the seeds agree exactly
    hv = hypervolumes(t, kl_cap=20.0, n_boot=50)
    assert np.allclose(hv["ci_low"], hv["hypervolume"]) and np.allclose(hv["ci_high"], hv["hypervolume"])


def test_robustness_ranks_over_a_grid_of_references():
    """beta's front is higher at large KL, cmi's at small KL: a reference far out in KL(z) favours
    beta, a demanding score reference near cmi's level flips it; the grid shows both."""
    t = linear_sweep(cmi_gain=0.0)
    beta = t["preset"] == "beta"
    t.loc[beta, "final/test/kl_z"] = t.loc[beta, "final/test/kl_z"] + 8  # beta: same scores at more KL
    t.loc[beta, "final/aolr"] = t.loc[beta, "final/aolr"] + 0.2
    r = robustness(t, kl_cap=20.0)
    aolr = r[r["score"] == "AoLR"]
    assert len(aolr) == 12 and set(aolr["ref_kl_z"]) == {10.0, 20.0, 40.0}
    firsts = {row["ranking"].split(" ")[0] for _, row in aolr.iterrows()}
    assert firsts == {"beta", "cmi"}


def test_matched_kl_reads_each_seeds_front_by_interpolation():
    t = linear_sweep(cmi_gain=0.05)  # seed s's front spans KL 2 + 0.1 s to 8 + 0.1 s
    m = matched_kl_interpolated(t, "final/aolr", levels=3)
    # every front is a line: the interpolated score is exactly 0.5 + 0.02 k (+ the gain)
    for _, r in m.iterrows():
        gain = 0.05 if r["preset"] == "cmi" else 0.0
        assert r["mean"] == pytest.approx(0.5 + 0.02 * r["kl_z"] + gain)
        assert r["std"] == pytest.approx(0.0, abs=1e-12)
        # each level averages only the seeds whose front covers it: no extrapolation
        assert r["n_seeds"] == sum(2 + 0.1 * s <= r["kl_z"] + 1e-9 and r["kl_z"] <= 8 + 0.1 * s + 1e-9 for s in range(3))
    # the levels span what at least two seeds of each preset cover
    assert m["kl_z"].min() == pytest.approx(2.1) and m["kl_z"].max() == pytest.approx(8.1)
    assert set(m["n_seeds"]) == {2, 3}


def test_a_collapsed_seed_does_not_shrink_the_matched_kl_range():
    """A seed whose z collapsed at every gamma has a front that ends near KL 0: the comparison
    still spans the other seeds' common range, from the seeds that reach it."""
    t = linear_sweep(cmi_gain=0.05)
    collapsed = (t["preset"] == "cmi") & (t["seed"] == 0)
    t.loc[collapsed, "final/test/kl_z"] = 0.001 * t.loc[collapsed, "gamma"]
    t.loc[collapsed, "final/aolr"] = 0.1
    m = matched_kl_interpolated(t, "final/aolr", levels=4)
    assert m["kl_z"].min() == pytest.approx(2.2) and m["kl_z"].max() == pytest.approx(8.1)
    cmi = m[m["preset"] == "cmi"]
    assert (cmi["n_seeds"] == 2).all()  # seeds 1 and 2; seed 0's one point is not a curve
    assert np.allclose(cmi["mean"], 0.55 + 0.02 * cmi["kl_z"])


@pytest.fixture
def mlp_exact_decides(monkeypatch):
    """The I-hat claim decided by the MLP head's exact form, as if it had met its ground truth."""
    from cmisweep import analysis
    monkeypatch.setitem(analysis.VERDICT_READINGS, "image", frozenset({"final/ihat_mlp_exact"}))


def test_holm_adjusts_over_the_family(mlp_exact_decides):
    t = linear_sweep(cmi_gain=0.05, noise=0.005, seeds=range(10))
    claims = judge(prepare(t))
    # I-hat, AoLR, mCAS, KL(z) ratio against beta: the default family; I-hat's Table 1 reading beside it, untested
    assert len(claims) == 5 and (claims["verdict"] == "no verdict (estimator off its ground truth)").sum() == 1
    claims = claims[claims["p_holm"].notna()]
    ordered = claims.sort_values("p")
    m = len(claims)
    assert ordered["p_holm"].iloc[0] == pytest.approx(min(1.0, m * ordered["p"].iloc[0]))
    assert (claims["p_holm"] >= claims["p"] - 1e-15).all()


@pytest.mark.parametrize("gain, expected", [(0.05, "reproduced"), (-0.05, "contradicted"), (0.0, "inconclusive")])
def test_claims_follow_the_data(gain, expected, mlp_exact_decides):
    """cmi's AoLR shifted by `gain` and its I-hat by -10 gain against beta over 10 seeds, with
    small noise; mCAS alternates +-0.01 over the gammas (no effect per seed)."""
    t = linear_sweep(cmi_gain=gain, noise=0.005, seeds=range(10))
    claims = judge(prepare(t))
    claims = claims[claims["reading"] != "paper form, model's head"].set_index("claim")
    assert claims.loc["higher AoLR at the same gamma", "verdict"] == expected
    assert claims.loc["lower I-hat(z;s)", "verdict"] == expected
    assert claims.loc["higher mCAS at the same gamma", "verdict"] == "inconclusive"
    assert "lower EER(z)" not in claims.index  # not measured by an image sweep
    if gain:
        assert np.sign(claims.loc["higher AoLR at the same gamma", "estimate"]) == np.sign(gain)
        lo, hi = claims.loc["higher AoLR at the same gamma", ["ci_low", "ci_high"]]
        assert lo < gain < hi and np.sign(lo) == np.sign(hi)


def test_report_has_the_collapse_claims_hypervolume_and_interpolated_sections():
    t = prepare(linear_sweep(cmi_gain=0.05, noise=0.005))
    hv = hypervolumes(t, kl_cap=20.0, n_boot=20)
    tables = {"hypervolume": hv, "hypervolume_robustness": robustness(t, 20.0), "paired_tests": paired_tests(t),
              "claims": judge(t)}
    from cmisweep.reports import collapse
    tables |= {"collapse": collapse.rates(t), "collapse_tests": collapse.mcnemar(t)}
    md = markdown("t", t, with_reference(frontier(t), hv), tables, [])
    for heading in ("## Collapse", "## Claims of the paper", "## Hypervolume of each front",
                    "## AoLR (accuracy, fraction) at matched KL(z), interpolated", "p_holm", "undecidable at n = 3"):
        assert heading in md, heading
    assert md.index("## Collapse") < md.index("## Claims of the paper") < md.index("## Hypervolume")


def test_kl_curves_hold_each_trials_epochs_beside_its_point_and_collapse(tmp_path):
    """kl_curves.csv: one row per trial with its searched point, seed, final collapse flag and
    validation KL(z) per epoch, from epochs.parquet's rows; the plot is drawn from it."""
    from cmisweep.reports.curves import kl_curves, plot_kl_curves

    t = prepare(pd.DataFrame([row("cmi", 0.5, s, kl, 0.7) for s, kl in ((0, 0.02), (1, 2.5))]))
    epochs = pd.DataFrame([{"name": f"cmi_g0.5_s{s}", "epoch": e, "val/kl_z": kl * e / 3}
                           for s, kl in ((0, 0.02), (1, 2.5)) for e in (1, 2, 3)])
    c = kl_curves(epochs, t).set_index("name")
    assert list(c.columns[-3:]) == ["epoch_1", "epoch_2", "epoch_3"]
    assert c.loc["cmi_g0.5_s1", "epoch_3"] == pytest.approx(2.5) and c.loc["cmi_g0.5_s1", "epoch_1"] == pytest.approx(2.5 / 3)
    assert bool(c.loc["cmi_g0.5_s0", "collapsed"]) and not bool(c.loc["cmi_g0.5_s1", "collapsed"])
    assert (c["preset"] == "cmi").all() and set(c["seed"]) == {0, 1}
    assert plot_kl_curves(c.reset_index(), tmp_path / "k.png").stat().st_size > 0
    # A trial the scheduler stopped before evaluation has no collapse verdict (NA), and still draws.
    stopped = prepare(pd.DataFrame([row("cmi", 0.5, 2, None, None, status="STOPPED")]))
    early = pd.DataFrame([{"name": "cmi_g0.5_s2", "epoch": 1, "val/kl_z": 0.1}])
    c2 = kl_curves(early, stopped)
    assert c2["collapsed"].isna().all()
    assert plot_kl_curves(c2, tmp_path / "k2.png").stat().st_size > 0


def test_c_read_curves_give_the_critics_read_of_c_over_kl_z_for_the_trials_that_read_c():
    """c_read_curves.csv: C-hat / KL(z) on the training batches per epoch, for the trials whose D_c
    reads C (beta has no C-hat: no row), beside the point, seed and collapse flag."""
    from cmisweep.reports.curves import c_read_curves

    t = prepare(pd.DataFrame([row("cmi", 0.5, 0, 0.02, 0.1), row("beta", 0.5, 0, 9.0, 0.7)]))
    epochs = pd.DataFrame([{"name": "cmi_g0.5_s0", "epoch": e, "train/kl_z": kl, "train/c_hat": c}
                           for e, kl, c in ((1, 0.01, 0.04), (2, 0.02, 0.01))]
                          + [{"name": "beta_g0.5_s0", "epoch": e, "train/kl_z": 5.0, "train/c_hat": None}
                             for e in (1, 2)])
    c = c_read_curves(epochs, t).set_index("name")
    assert list(c.index) == ["cmi_g0.5_s0"]
    assert c.loc["cmi_g0.5_s0", "epoch_1"] == pytest.approx(4.0)
    assert c.loc["cmi_g0.5_s0", "epoch_2"] == pytest.approx(0.5)
    assert bool(c.loc["cmi_g0.5_s0", "collapsed"])
    assert c_read_curves(epochs[epochs["name"] == "beta_g0.5_s0"], t).empty


def test_main_effects_of_a_design_take_the_seed_as_the_unit():
    """A 2^(3-1) design over 4 seeds where `a` (other level) keeps z in every run and `b` does
    nothing: a's per-seed effect on collapse is -1 on every seed (sign-flip p = 2/16), b's 0; the
    reference level is the first row's."""
    from cmisweep.reports.factorial import factors, main_effects, note

    design = [{"a": 0.01, "b": "x", "c": 2}, {"a": 0.001, "b": "x", "c": 5},
              {"a": 0.01, "b": "y", "c": 5}, {"a": 0.001, "b": "y", "c": 2}]
    assert factors(design) == {"a": (0.01, 0.001), "b": ("x", "y"), "c": (2, 5)}
    rows = []
    for s in range(4):
        for r in design:
            kl = 3.0 + s if r["a"] == 0.001 else 0.02
            rows.append(row("cmi", 0.5, s, kl, 0.7, **{f"params.{k}": v for k, v in r.items()}))
    t = prepare(pd.DataFrame(rows))
    eff = main_effects(t, design).set_index(["response", "factor"])
    assert eff.loc[("collapsed", "a"), "effect"] == -1 and eff.loc[("collapsed", "a"), "p"] == pytest.approx(2 / 16)
    assert eff.loc[("collapsed", "b"), "effect"] == 0 and eff.loc[("collapsed", "c"), "effect"] == 0
    assert eff.loc[("log10_kl_z", "a"), "effect"] > 2 and eff.loc[("collapsed", "a"), "n_seeds"] == 4
    assert "4 seeds reach p = 0.125 at best" in note(eff.reset_index(), 0.05) and "7 seeds are the floor" in note(eff.reset_index(), 0.05)
