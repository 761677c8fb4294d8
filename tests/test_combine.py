"""`cmisweep combine`: sweeps run in sittings read as the one sweep of a grid space (docs/design.md
6.3), end to end on real trained trials: the committed seed blocks of the collapse confirmation
(two arms x two seed blocks), no training."""
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmisweep.cli import main
from conftest import ROOT

STUDY = ROOT / "results" / "studies" / "fmnist-collapse-confirm"
BLOCKS = [STUDY / b for b in ("cmi-s0-1", "cmi-s2-3", "beta-s0-1", "beta-s2-3")]


def whole_space(tmp_path: Path, **search) -> Path:
    """Both arms as one grid: beta and cmi x s_layer {6, 4} x critic lr {1e-2, 1e-3} (beta trains
    no critic, so it runs once per s_layer), the blocks' trial."""
    raw = yaml.safe_load((STUDY / "cmi.yaml").read_text())
    raw["name"] = "confirm-combined"
    raw["search"] = {**raw["search"], "presets": ["beta", "cmi"], "seeds": [0, 1, 2, 3], **search}
    path = tmp_path / "whole.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_seed_blocks_of_two_arms_read_as_one_sweep(tmp_path, capsys):
    """Every point of the whole grid comes from the block that ran it, with its metrics, epochs and
    kept model; the reports pair CMI with beta at the same s_layer and seed across the arms, and
    give each preset's main effects of its own two-level settings (beta has no critic lr)."""
    out = tmp_path / "combined"
    assert main(["combine", str(whole_space(tmp_path)), *map(str, BLOCKS), "--into", str(out)]) == 0
    blocks = pd.concat([pd.read_parquet(b / "trials.parquet") for b in BLOCKS]).set_index("name")
    got = pd.read_parquet(out / "trials.parquet").set_index("name")
    assert sorted(got.index) == sorted(blocks.index) and len(got) == 24
    assert (got.loc[blocks.index, "final/aolr"] == blocks["final/aolr"]).all()
    epochs = sum(len(pd.read_parquet(b / "epochs.parquet")) for b in BLOCKS)
    assert len(pd.read_parquet(out / "epochs.parquet")) == epochs
    kept = {p.name for b in BLOCKS for p in (b / "models").glob("*.pt")}
    assert {p.name for p in (out / "models").glob("*.pt")} == kept and len(kept) == 8
    claims = pd.read_csv(out / "reports" / "claims.csv")
    aolr = claims[claims["claim"] == "higher AoLR at the same gamma"]
    assert set(aolr["baseline"]) == {"beta"} and len(aolr) == 2  # one comparison per CMI critic lr
    assert (aolr["n_seeds"] == 4).all()
    effects = pd.read_csv(out / "reports" / "factorial.csv")
    assert set(effects.loc[effects["preset"] == "cmi", "factor"]) == {"model.s_layer", "regularizer.critic_lr"}
    assert set(effects.loc[effects["preset"] == "beta", "factor"]) == {"model.s_layer"}
    assert "Main effects" in (out / "reports" / "report.md").read_text()
    assert "combined 24 trials from 4 blocks" in capsys.readouterr().out


def test_a_combined_sweeps_own_evaluations_survive_a_second_combine(tmp_path):
    """A block's evaluations come along; an evaluate of the combined sweep added its own rows, and
    combining again (a new seed block, say) keeps both, each once."""
    blocks = [tmp_path / b.name for b in BLOCKS[::2]]
    for src, dst in zip(BLOCKS[::2], blocks):
        shutil.copytree(src, dst)

    def row(evaluation: str, value: float) -> dict:
        return {"trial_id": "t", "name": "beta_g0.5_s_layer4_s0", "metric": "mcas", "column": "final/mcas",
                "value": value, "evaluation": evaluation, "selection": "all", "settings": "{}", "commit": "c",
                "cpu_model": "cpu", "device": "cpu", "evaluated_at": f"2026-12-06T00:00:0{value * 10:.0f}+00:00"}

    pd.DataFrame([row("b1", 0.4)]).to_parquet(blocks[1] / "evaluations.parquet", index=False)
    out, space = tmp_path / "combined", whole_space(tmp_path, seeds=[0, 1])
    assert main(["combine", str(space), *map(str, blocks), "--into", str(out)]) == 0
    own = pd.concat([pd.read_parquet(out / "evaluations.parquet"), pd.DataFrame([row("e1", 0.5)])])
    own.to_parquet(out / "evaluations.parquet", index=False)
    assert main(["combine", str(space), *map(str, blocks), "--into", str(out)]) == 0
    history = pd.read_parquet(out / "evaluations.parquet")
    assert sorted(history["evaluation"]) == ["b1", "e1"]
    trials = pd.read_parquet(out / "trials.parquet").set_index("name")
    assert trials.loc["beta_g0.5_s_layer4_s0", "final/mcas"] == 0.5  # the latest evaluation, applied


@pytest.mark.parametrize("case", ["missing point", "other trial", "two blocks", "no sweep"])
def test_bad_blocks_are_one_line_and_nothing_written(tmp_path, capsys, case):
    """A point no block ran, a block whose trial is not SPACE's, a point two blocks ran, a
    directory that is no sweep: exit 2, one line naming the file and key, no DIR."""
    out = tmp_path / "combined"
    space, blocks, sets, names = whole_space(tmp_path), list(BLOCKS), [], []
    if case == "missing point":
        space, names = whole_space(tmp_path, seeds=[0, 1, 2, 3, 4]), [space, "search", "in no block"]
    elif case == "other trial":
        sets, names = ["--set", "trial.train.epochs=3"], [BLOCKS[0] / "space.yaml", "trial.train.epochs"]
    elif case == "two blocks":
        blocks, names = blocks + [BLOCKS[0]], [BLOCKS[0] / "trials.parquet", "also run by"]
    else:
        blocks, names = blocks + [tmp_path], ["BLOCK", str(tmp_path)]
    code = main(["combine", str(space), *map(str, blocks), "--into", str(out), *sets])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    assert not out.exists()
