"""Each committed study's RUN.md names a command that runs what ran (issue 27): the space file of
its `cmisweep run` (or of the `cmisweep combine` that reads its seed blocks as one sweep) is
committed beside the study, and it resolves to the study's own space.yaml
(the sweep's resolved copy) in every trial setting, search dimension and algorithm."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cmisweep.sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "results" / "studies").glob("**/space.yaml"))


def run_commands(study: Path) -> list[tuple[Path, list[str]]]:
    """The space files (and --set overrides) that the RUN.md at or above this study runs, or
    combines its blocks as (`cmisweep combine`), as paths in this checkout."""
    run_md = study / "RUN.md" if (study / "RUN.md").exists() else study.parent / "RUN.md"
    found = re.findall(r"cmisweep (?:run|combine) \$REPO/(\S+\.yaml)([^\n]*)", run_md.read_text())
    out = []
    for f, rest in found:
        try:
            words = shlex.split(rest)
        except ValueError:  # prose after the command (an apostrophe): no --set there
            words = []
        sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
        if (ROOT / f).parent == study:
            out.append((ROOT / f, sets))
    return out


def comparable(space) -> dict:
    d = space.model_dump(mode="json")
    d["trial"]["data"].pop("path")  # pinned to the machine's data directory when it ran
    d.pop("analysis")  # written after the run for the committed studies (post hoc)
    return d


@pytest.mark.parametrize("study", STUDIES, ids=[str(s.relative_to(ROOT / "results" / "studies")) for s in STUDIES])
def test_run_md_command_runs_what_ran(study):
    commands = run_commands(study)
    assert len(commands) == 1, (f"{study}: expected one `cmisweep run $REPO/...` (or `cmisweep combine $REPO/...`) "
                                "of a file in the study directory")
    ran = load_space(study / "space.yaml", stored=True)
    assert comparable(load_space(*commands[0])) == comparable(ran)


@pytest.mark.parametrize("study", ["fmnist-cpu-study", "speech-cpu-study"])
def test_committed_reports_are_rewritten_from_the_committed_files(study, tmp_path):
    """`cmisweep report results/studies/<study>` needs nothing but the committed files, and gives
    back the committed claims and hypervolumes."""
    import shutil

    import pandas as pd

    from cmisweep.cli import main

    src = ROOT / "results" / "studies" / study
    d = tmp_path / study
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("reports"))
    assert main(["report", str(d)]) == 0
    for name in ("claims.csv", "hypervolume.csv", "collapse.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(d / "reports" / name), pd.read_csv(src / "reports" / name))


@pytest.mark.slow(45)
def test_a_committed_study_is_evaluated_again_from_its_kept_models(tmp_path):
    """The speech study ships its models: from a checkout and the corpus `cmisweep data
    synth-speech` makes, `cmisweep evaluate` gives back the EER a committed trial recorded at its end."""
    import shutil

    import pandas as pd

    from helpers import cli

    src = ROOT / "results" / "studies" / "speech-cpu-study"
    d = tmp_path / "speech-cpu-study"
    shutil.copytree(src, d)
    name = "cmi_g0.8_s1"
    assert (d / "models" / f"{name}.pt").is_file()
    r = cli("data", "synth-speech", "--out", tmp_path / "data" / "speech-synth", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("evaluate", d, "--metrics", "eer", "--trials", name, cwd=tmp_path,
            env={"CMISWEEP_DATA": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr[-3000:]
    before = pd.read_parquet(src / "trials.parquet").set_index("name")
    after = pd.read_parquet(d / "trials.parquet").set_index("name")
    history = pd.read_parquet(d / "evaluations.parquet")
    committed = len(pd.read_parquet(src / "evaluations.parquet")) if (src / "evaluations.parquet").exists() else 0
    new = history.iloc[committed:]  # the committed study's own evaluations (its I-hat) come first
    assert set(new["name"]) == {name} and set(new["metric"]) == {"eer"}
    for column in ("final/eer_z", "final/eer_s"):
        assert after.loc[name, column] == pytest.approx(before.loc[name, column], abs=1e-6)
