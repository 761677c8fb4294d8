"""The README's verdict tables say what the committed studies' claims.csv say (issue 27): every
claim of a study's family appears once, with its verdict, estimate, p and Holm p and seeds; an I-hat
row names its reading (form, head) in brackets, and a row outside the family has no Holm p (–)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("fmnist-cpu-study", "fmnist-decided", "speech-cpu-study")


def readme_rows() -> dict[str, list[list[str]]]:
    """study -> its verdict table's rows (cells), the study being the last one the text linked."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## What it reproduces of the paper"):text.index("## Using it")]
    rows: dict[str, list[list[str]]] = {}
    study = None
    for line in section.splitlines():
        linked = re.findall(r"results/studies/([\w.-]+)/RUN\.md", line)
        if linked:
            study = linked[-1]
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| Table") or line.startswith("| Fig."):
            rows.setdefault(study, []).append(cells)
    return rows


def fmt(x: float) -> str:
    return "–" if pd.isna(x) else f"{x:.3g}"


def key(c: pd.Series) -> str:
    reading = c.get("reading")
    return f"{c['source']}: {c['claim']}" + (f" [{reading}]" if isinstance(reading, str) and reading else "")


@pytest.mark.parametrize("study", STUDIES)
def test_readme_verdicts_match_claims_csv(study):
    claims = pd.read_csv(ROOT / "results" / "studies" / study / "reports" / "claims.csv")
    rows = readme_rows().get(study, [])
    assert len(rows) == len(claims), f"{study}: {len(rows)} README rows, {len(claims)} claims"
    by_key = {(r[0], r[1]): r for r in rows}
    assert len(by_key) == len(rows), f"{study}: two README rows name the same claim, reading and baseline"
    for _, c in claims.iterrows():
        r = by_key.get((key(c), c["baseline"]))
        assert r is not None, (study, c["claim"], c["baseline"])
        assert r[2] == c["verdict"], (study, c["claim"], c["baseline"], r[2], c["verdict"])
        assert r[3].split()[0] == fmt(c["estimate"]), (r[3], c["estimate"])
        assert r[4] == f"{fmt(c['p'])} / {fmt(c['p_holm'])}", (r[4], c["p"], c["p_holm"])
        assert r[5] == f"{c['n_seeds']} ({c['n_pairs']} pairs)"
        assert r[6] == f"{c['collapsed_ref']} / {c['collapsed_base']}"
