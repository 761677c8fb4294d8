"""cmisweep.reports.versus: which points of one sweep lie beyond another sweep's front. The sweeps
here are built so that the answer follows from the geometry (the end-to-end test runs it through
`cmisweep report --against` on a real sweep)."""
import numpy as np
import pandas as pd

from cmisweep.reports import versus


def trial(preset, gamma, seed, kl, aolr, alpha=None):
    return {"preset": preset, "gamma": gamma, "alpha": alpha, "seed": seed, "status": "FINISHED",
            "final/test/kl_z": kl, "final/aolr": aolr}


OTHER = pd.DataFrame([
    trial("vanilla", 0.0, 0, 1.0, 0.50), trial("cmi", 0.3, 0, 3.0, 0.70),
    trial("beta", 0.3, 0, 2.0, 0.90),  # dominates A, but only when beta's front is asked for
    trial("cmi", 0.3, 1, 0.5, 0.95),  # a seed the other sweep has alone: left out
])
MINE = pd.DataFrame([
    trial("cmi", 0.2, 0, 2.0, 0.65, alpha=0.4),  # A: between the front's points, above them: beyond
    trial("cmi", 0.5, 0, 2.0, 0.50, alpha=0.1),  # B: worse than vanilla's (1.0, 0.50) in KL(z): not
    trial("cmi", 0.3, 0, 3.0, 0.70, alpha=0.6),  # C: equal to a front point: adds nothing
])


def rows(points):
    p = points[points["score"] == "AoLR"]
    return {float(a): (bool(b), float(g), s) for a, b, g, s in zip(p["alpha"], p["beyond"], p["hv_gain"], p["seeds_beyond"])}


def test_a_point_is_beyond_exactly_when_no_front_point_is_as_good_in_both():
    points, summary = versus.against(MINE, OTHER)
    got = rows(points)
    assert {a: b for a, (b, _, _) in got.items()} == {0.4: True, 0.1: False, 0.6: False}
    assert got[0.4][1] > 0 and got[0.1][1] == got[0.6][1] == 0.0
    assert got[0.4][2] == "1/1"  # its seed-0 trial against seed 0's front
    s = summary.set_index("score").loc["AoLR"]
    assert (s["n_beyond"], s["n_points"], s["seeds"], s["front_presets"]) == (1, 3, "0", "cmi")
    assert s["hv_with_points"] == np.float64(s["hv_front"] + got[0.4][1])  # only A adds area


def test_the_front_is_made_of_the_presets_asked_for():
    points, _ = versus.against(MINE, OTHER, presets=["cmi", "beta"])
    assert not any(b for b, _, _ in rows(points).values())  # beta's (2.0, 0.90) dominates A too


def test_written_reports_name_the_other_sweep(tmp_path):
    md = versus.write(MINE, OTHER, "mine", "other", tmp_path)
    text = md.read_text()
    assert md.name == "versus_other.md" and "1 of 3 points beyond the front of cmi" in text
    assert (tmp_path / "versus_other_aolr.png").is_file()
    assert pd.read_csv(tmp_path / "versus_other.csv")["beyond"].sum() == 1
