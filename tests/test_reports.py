"""report.md and its tables read like the paper: -ELBO positive in nats, EER and VC-mCAS in percent,
every column named with its unit; trials.parquet's stored values stay as they are."""
import pandas as pd
import pytest

from cmisweep.reports import markdown
from cmisweep.reports.frontier import frontier
from cmisweep.reports.tables import TABLE_METRICS, UNITS_NOTE, matched_kl_table, method_by_gamma, paired_tests


def _trials() -> pd.DataFrame:
    """beta and cmi at two gammas x two seeds, stored as the trainer and the speech suite store them:
    final/test/elbo = -(recon + KL), a negative number; EER and VC-mCAS fractions."""
    rows = []
    for preset, better in (("beta", 0.0), ("cmi", 1.0)):
        for gamma in (0.4, 0.8):
            for seed in (0, 1):
                rows.append({
                    "name": f"{preset}_g{gamma}_s{seed}", "status": "FINISHED", "preset": preset, "gamma": gamma,
                    "alpha": None, "seed": seed,
                    "final/test/kl_z": 10.0 - 5 * gamma + seed, "final/test/elbo": -(300.0 + seed - 4 * better),
                    "final/eer_z": 0.20 - 0.05 * better + 0.01 * seed, "final/eer_s": 0.45,
                    "final/vc_mcas": 0.70 + 0.1 * better, "final/aolr": 0.8,
                })
    return pd.DataFrame(rows)


def test_tables_use_the_papers_units_and_signs():
    t = _trials()
    assert TABLE_METRICS["final/test/elbo"] == "-ELBO (nats, test)"
    assert TABLE_METRICS["final/eer_z"] == "EER(z) [%]" and TABLE_METRICS["final/vc_mcas"] == "VC-mCAS [%]"
    assert TABLE_METRICS["final/test/kl_z"] == "KL(z) (nats, test)" and "fraction" in TABLE_METRICS["final/aolr"]
    elbo = method_by_gamma(t, "final/test/elbo")
    assert elbo.loc["beta", "0.4"].startswith("300.5 ±")  # recon + KL: positive nats
    assert elbo.loc["cmi", "0.8"].startswith("296.5 ±")
    assert method_by_gamma(t, "final/eer_z").loc["cmi", "0.4"].startswith("15.5 ±")  # percent
    assert method_by_gamma(t, "final/vc_mcas").loc["cmi", "0.4"] == "80 ± 0"
    assert method_by_gamma(t, "final/aolr").loc["cmi", "0.4"] == "0.8 ± 0"  # a fraction
    assert t["final/test/elbo"].lt(0).all()  # the frame itself is untouched
    tests = paired_tests(t).set_index("metric")
    # cmi's ELBO is 4 nats higher: its -ELBO is 4 nats lower; its EER 5 points lower
    assert tests.loc["-ELBO (nats, test)", "estimate"] == pytest.approx(-4.0)
    assert tests.loc["EER(z) [%]", "mean_diff_pairs"] == pytest.approx(-5.0)


def test_report_states_units_and_matched_kl_is_in_them():
    t = _trials()
    front = frontier(t)
    assert front.loc[front["score"] == "EER(z)", "value"].between(0, 1).all()  # frontier.parquet keeps fractions
    label, m = matched_kl_table(front, "EER(z)")
    assert label == "EER(z) [%]" and m.stack().between(5, 30).all()
    md = markdown("t", t, front, {"paired_tests": paired_tests(t)}, [])
    assert UNITS_NOTE in md and "percent" in UNITS_NOTE and "fractions in [0, 1]" in UNITS_NOTE
    for heading in ("## -ELBO (nats, test) (mean", "## EER(z) [%] (mean", "## VC-mCAS [%] (mean",
                    "## KL(z) (nats, test) (mean", "## EER(z) [%] at matched KL(z)", "## AoLR (accuracy, fraction)"):
        assert heading in md, heading
    assert "## ELBO" not in md and "| -300" not in md


def test_points_that_differ_only_in_a_searched_parameter_are_never_averaged_together():
    """One seed grouping (reports.trials.point_groups) keys on the searched parameters too: an
    ablation of critic_lr at one gamma keeps each setting's mean, rate and table column apart."""
    from cmisweep.reports.collapse import rates
    from cmisweep.reports.frontier import seed_means

    rows = [{"name": f"cmi_lr{lr}_s{seed}", "status": "FINISHED", "preset": "cmi", "gamma": 0.3, "alpha": None,
             "seed": seed, "params.regularizer.critic_lr": lr,
             "final/test/kl_z": 0.01 if lr == 0.01 else 6.0 + seed, "final/aolr": 0.1 if lr == 0.01 else 0.7}
            for lr in (0.001, 0.01) for seed in (0, 1)]
    t = pd.DataFrame(rows)
    means = seed_means(t, ["final/test/kl_z", "final/aolr"]).sort_values("params.regularizer.critic_lr")
    assert list(means["final/aolr"]) == pytest.approx([0.7, 0.1]) and list(means["n_seeds"]) == [2, 2]
    assert list(rates(t).sort_values("params.regularizer.critic_lr")["collapsed"]) == [0, 2]
    table = method_by_gamma(t, "final/aolr")
    assert len(table.columns) == 2 and all("critic_lr" in c for c in table.columns)
