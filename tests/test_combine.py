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
    # again with seeds 0-1 only: the other seeds' trials, epochs and models leave DIR
    assert main(["combine", str(whole_space(tmp_path, seeds=[0, 1])), *map(str, BLOCKS), "--into", str(out)]) == 0
    got = pd.read_parquet(out / "trials.parquet")
    assert len(got) == 12 and set(got["seed"]) == {0, 1}
    assert set(pd.read_parquet(out / "epochs.parquet")["name"]) == set(got["name"])
    early = {n for n in kept_names(BLOCKS) if n.endswith(("_s0", "_s1"))}
    assert {p.stem for p in (out / "models").glob("*.pt")} == early
    said = capsys.readouterr().out
    assert "left out" in said and "cmi-s2-3/cmi_g0.5_s_layer4_critic_lr0.001_s2" in said


def kept_names(blocks) -> set[str]:
    return {p.stem for b in blocks for p in (b / "models").glob("*.pt")}


def test_evaluations_come_along_in_time_order_and_the_combined_sweeps_own_are_kept(tmp_path):
    """A block's evaluations come along; an evaluate of the combined sweep added its own rows; a
    later evaluate of a block is newer still. Combining again keeps each row once, in time order,
    so the newest value is the one the reports use; rows of trials no longer combined leave."""
    blocks = [tmp_path / b.name for b in BLOCKS[::2]]
    for src, dst in zip(BLOCKS[::2], blocks):
        shutil.copytree(src, dst)

    def row(evaluation: str, name: str, value: float, second: int) -> dict:
        return {"trial_id": "t", "name": name, "metric": "mcas", "column": "final/mcas", "value": value,
                "evaluation": evaluation, "selection": "all", "settings": "{}", "commit": "c", "cpu_model": "cpu",
                "device": "cpu", "evaluated_at": f"2026-12-06T00:00:{second:02d}+00:00"}

    def add(path: Path, *rows: dict) -> None:
        old = [pd.read_parquet(path)] if path.exists() else []
        pd.concat([*old, pd.DataFrame(list(rows))], ignore_index=True).to_parquet(path, index=False)

    b4 = "beta_g0.5_s_layer4_s0"
    add(blocks[1] / "evaluations.parquet", row("b1", b4, 0.4, 1))
    out, space = tmp_path / "combined", whole_space(tmp_path, seeds=[0, 1])
    assert main(["combine", str(space), *map(str, blocks), "--into", str(out)]) == 0
    add(out / "evaluations.parquet", row("e1", b4, 0.5, 2), row("e1", "beta_g0.5_s_layer4_s1", 0.45, 2))
    add(blocks[1] / "evaluations.parquet", row("b2", b4, 0.6, 3))
    assert main(["combine", str(space), *map(str, blocks), "--into", str(out)]) == 0
    history = pd.read_parquet(out / "evaluations.parquet")
    assert list(history["evaluation"]) == ["b1", "e1", "e1", "b2"]
    trials = pd.read_parquet(out / "trials.parquet").set_index("name")
    assert trials.loc[b4, "final/mcas"] == 0.6 and trials.loc["beta_g0.5_s_layer4_s1", "final/mcas"] == 0.45
    assert main(["combine", str(whole_space(tmp_path, seeds=[0])), *map(str, blocks), "--into", str(out)]) == 0
    assert set(pd.read_parquet(out / "evaluations.parquet")["name"]) == {b4}


CASES = ["missing point", "other trial", "two blocks", "no sweep", "unreadable", "into a file", "into another sweep",
         "not a grid"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_nothing_written(tmp_path, capsys, case):
    """A point no block ran, a block whose trial is not SPACE's, a point two blocks ran, a
    directory that is no sweep, an unreadable block file, a DIR that is a file or another sweep's,
    a SPACE that is no grid: exit 2, one line naming the file and key, DIR as it was."""
    out = tmp_path / "combined"
    space, blocks, sets, names = whole_space(tmp_path), list(BLOCKS), [], []
    if case == "missing point":
        space, names = whole_space(tmp_path, seeds=[0, 1, 2, 3, 4]), [space, "search", "in no block"]
    elif case == "other trial":
        sets, names = ["--set", "trial.train.epochs=3"], [BLOCKS[0] / "space.yaml", "trial.train.epochs"]
    elif case == "two blocks":  # another block that ran cmi-s0-1's points too
        blocks.append(tmp_path / "again")
        shutil.copytree(BLOCKS[0], blocks[-1])
        names = [blocks[-1] / "trials.parquet", "also run by", BLOCKS[0]]
    elif case == "no sweep":
        blocks, names = blocks + [tmp_path / "empty"], ["BLOCK", str(tmp_path / "empty")]
        blocks[-1].mkdir()
    elif case == "unreadable":
        blocks[0] = tmp_path / "broken"
        shutil.copytree(BLOCKS[0], blocks[0])
        (blocks[0] / "epochs.parquet").write_bytes(b"not parquet")
        names = [blocks[0] / "epochs.parquet", "not a parquet file"]
    elif case == "into a file":
        out.write_text("x")
        names = ["--into", "is a file"]
    elif case == "into another sweep":
        out.mkdir()
        (out / "space.yaml").write_text("name: someone-elses\n")
        names = ["--into", "someone-elses"]
    else:
        sets, names = ["--set", "algorithm.kind=random", "--set", "algorithm.num_samples=2"], [space, "algorithm.kind"]
    before = {p: p.read_bytes() for p in sorted(out.rglob("*"))} if out.is_dir() else None
    code = main(["combine", str(space), *map(str, blocks), "--into", str(out), *sets])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], lines[0]
    if before is not None:
        assert {p: p.read_bytes() for p in sorted(out.rglob("*"))} == before
    else:
        assert not out.exists() or out.is_file()
