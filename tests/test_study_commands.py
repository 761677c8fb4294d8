"""Each committed study's RUN.md names a command that runs what ran (issue 27): the space file of
its `cmisweep run` is committed beside the study, and it resolves to the study's own space.yaml
(the sweep's resolved copy) in every trial setting, search dimension and algorithm."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cmisweep.sweep.space import load_space

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "results" / "studies").glob("**/space.yaml"))


def run_commands(study: Path) -> list[Path]:
    """The space files the RUN.md above or at this study runs, as paths in this checkout."""
    run_md = study / "RUN.md" if (study / "RUN.md").exists() else study.parent / "RUN.md"
    found = re.findall(r"cmisweep run \$REPO/(\S+\.yaml)", run_md.read_text())
    return [ROOT / f for f in found if (ROOT / f).parent == study]


def comparable(space) -> dict:
    d = space.model_dump(mode="json")
    d["trial"]["data"].pop("path")  # pinned to the machine's data directory when it ran
    d.pop("analysis")  # written after the run for the committed studies (post hoc)
    return d


@pytest.mark.parametrize("study", STUDIES, ids=[str(s.relative_to(ROOT / "results" / "studies")) for s in STUDIES])
def test_run_md_command_runs_what_ran(study):
    commands = run_commands(study)
    assert len(commands) == 1, f"{study}: expected one `cmisweep run $REPO/...` of a file in the study directory"
    ran = load_space(study / "space.yaml", stored=True)
    assert comparable(load_space(commands[0])) == comparable(ran)


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
