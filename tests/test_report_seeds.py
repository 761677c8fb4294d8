"""Each seed's number in each claim and the machine it ran on (reports.seeds): a study run in
sittings on two machines shows each machine's seeds and mean. Synthetic trials whose per-seed
differences are known by construction."""
import pandas as pd
import pytest

from cmisweep.analysis import Analysis
from cmisweep.reports import markdown
from cmisweep.reports.claims import judge
from cmisweep.reports.seeds import by_machine, seed_differences
from cmisweep.reports.trials import prepare

XEON, EPYC = ("Intel(R) Xeon(R) Processor", "bf16"), ("AMD EPYC", "fp32")
FAMILY = Analysis(family=[{"claim": "aolr", "baseline": "beta", "sesoi": 0.01},
                          {"claim": "kl_ratio", "baseline": "beta", "margin": 0.2}])


def sweep(gain: dict[int, float], machine: dict[int, tuple[str, str]], split: int | None = None) -> pd.DataFrame:
    """beta and cmi at gamma 0.3 and 0.5 for each seed; cmi's AoLR is beta's + gain[seed] and its
    KL(z) 0.5 of beta's. Each seed's trials run on machine[seed]; seed `split`'s beta trials on the
    other machine."""
    rows = []
    for seed, g in gain.items():
        for preset in ("beta", "cmi"):
            for gamma in (0.3, 0.5):
                cpu, precision = machine[seed]
                if seed == split and preset == "beta":
                    cpu, precision = EPYC if machine[seed] == XEON else XEON
                kl = 10.0 - 5 * gamma + seed
                rows.append({"name": f"{preset}_g{gamma}_s{seed}", "status": "FINISHED", "preset": preset,
                             "gamma": gamma, "alpha": None, "seed": seed, "cpu_model": cpu, "precision": precision,
                             "final/test/kl_z": kl * (0.5 if preset == "cmi" else 1.0),
                             "final/aolr": 0.7 + 0.001 * seed + (g if preset == "cmi" else 0.0)})
    return prepare(pd.DataFrame(rows))


def test_each_seeds_difference_and_machine_are_listed_and_average_to_the_claims_estimate():
    gain = {0: 0.05, 1: 0.04, 2: 0.06, 3: 0.01, 4: 0.0, 5: 0.02}
    machine = {s: XEON if s < 3 else EPYC for s in gain}
    t = sweep(gain, machine)
    table = seed_differences(t, FAMILY)
    aolr = table[table["claim"] == "higher AoLR at the same gamma"].set_index("seed")
    assert aolr["difference"].to_dict() == pytest.approx(gain)
    assert (aolr["n_pairs"] == 2).all()
    assert aolr.loc[0, "machine"] == "Intel(R) Xeon(R) Processor, bf16" and aolr.loc[4, "machine"] == "AMD EPYC, fp32"
    ratio = table[table["claim"] == "KL(z) within the margin of the baseline's (±20%)"]
    assert ratio["difference"].to_numpy() == pytest.approx([-0.5] * 6)
    claims = judge(t, FAMILY).set_index("claim")  # the seeds' numbers are the ones the test takes
    assert claims.loc["higher AoLR at the same gamma", "estimate"] == pytest.approx(aolr["difference"].mean())
    assert set(table["claim"]) == set(claims.index)

    split = by_machine(table)
    aolr_split = split[split["claim"] == "higher AoLR at the same gamma"].set_index("machine")
    assert aolr_split.loc["Intel(R) Xeon(R) Processor, bf16", "mean"] == pytest.approx(0.05)
    assert aolr_split.loc["AMD EPYC, fp32", "mean"] == pytest.approx(0.01)
    assert aolr_split.loc["AMD EPYC, fp32", "seeds"] == "3, 4, 5"
    md = markdown("t", t, pd.DataFrame(), {"claims": judge(t, FAMILY), "seed_differences": table}, [])
    assert "### The seeds by machine" in md and "AMD EPYC, fp32" in md


def test_one_machine_gives_no_split_and_a_pair_across_machines_is_named():
    gain = {0: 0.05, 1: 0.04, 2: 0.06}
    one = seed_differences(sweep(gain, {s: XEON for s in gain}), FAMILY)
    assert by_machine(one).empty
    md = markdown("t", sweep(gain, {s: XEON for s in gain}), pd.DataFrame(), {"seed_differences": one}, [])
    assert "by machine" not in md
    across = seed_differences(sweep(gain, {s: XEON for s in gain}, split=1), FAMILY).set_index("seed")
    assert across.loc[1, "machine"].iloc[0] == "Intel(R) Xeon(R) Processor, bf16 | AMD EPYC, fp32"
    assert across.loc[0, "machine"].iloc[0] == "Intel(R) Xeon(R) Processor, bf16"
