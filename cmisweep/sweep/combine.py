"""Sweeps run in sittings read as one: `cmisweep combine SPACE BLOCK... --into DIR` (docs/design.md 6.3).

A study too long for one sitting runs as blocks: each a complete grid sweep over some of the seeds
(or one arm of the design), committed when it ends. SPACE is the whole design. combine checks that
every block ran SPACE's trial (its trial config, the data's location aside), takes each point of
SPACE's grid from the block that ran it, and writes DIR as one sweep: space.yaml (SPACE),
trials.parquet, epochs.parquet, evaluations.parquet, the kept models, and the reports. Then
`cmisweep report DIR` and `cmisweep evaluate DIR` work on it as on any committed sweep.

Bad input is one line and nothing written: a block that is no sweep, a block whose trial differs
from SPACE's, a point two blocks ran, a point no block ran (restrict SPACE with --set
'search.seeds=[...]' to what has run). A block's trial that is no point of SPACE is left out and
listed. An evaluations.parquet already in DIR (a `cmisweep evaluate` of the combined sweep) is
kept: its rows stay beside the blocks'.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import yaml

from cmisweep.errors import ConfigError
from cmisweep.files import atomic_write, atomic_write_text
from cmisweep.sweep.space import grid_points, load_space, point_name
from cmisweep.vocabulary import EVALUATIONS_FILE, MODELS_DIR


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def _trial_settings(space) -> dict:
    """The trial config as flat keys, without the data's location (a machine's path, not a setting)."""
    flat = _flat(space.trial.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if k != "data.path"}


def _block(d: Path, ours: dict, space_file: str):
    """(trials, epochs, evaluations) of one block, after checking it ran SPACE's trial."""
    if not ((d / "space.yaml").is_file() and (d / "trials.parquet").is_file()):
        raise ConfigError(None, "BLOCK", f"no sweep at {d} (expected its space.yaml and trials.parquet)")
    theirs = _trial_settings(load_space(d / "space.yaml", stored=True))
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ConfigError(d / "space.yaml", f"trial.{key}", f"{theirs.get(key)!r}, where {space_file} has "
                                                               f"{ours.get(key)!r}: a block must run SPACE's trial")
    trials = pd.read_parquet(d / "trials.parquet")
    epochs = pd.read_parquet(d / "epochs.parquet") if (d / "epochs.parquet").is_file() else None
    history = pd.read_parquet(d / EVALUATIONS_FILE) if (d / EVALUATIONS_FILE).is_file() else None
    return trials, epochs, history


def _select(space, blocks: list[Path], space_file: str):
    """{trial name: block} for every point of SPACE, and the blocks' trials that are none."""
    want = [point_name(p) for p in grid_points(space)]
    ours, found, extra, frames = _trial_settings(space), {}, [], {}
    for d in blocks:
        frames[d] = _block(d, ours, space_file)
        for name in frames[d][0]["name"]:
            if name not in want:
                extra.append(f"{d.name}/{name}")
            elif name in found:
                raise ConfigError(d / "trials.parquet", name, f"also run by {found[name]}: each point comes from one block")
            else:
                found[name] = d
    missing = [n for n in want if n not in found]
    if missing:
        raise ConfigError(space_file, "search", f"{len(missing)} of its {len(want)} points are in no block "
                          f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); restrict it to what "
                          "the blocks ran, e.g. --set 'search.seeds=[...]'")
    return found, extra, frames


def _concat(parts: list) -> pd.DataFrame | None:
    parts = [p for p in parts if p is not None and len(p)]
    return pd.concat(parts, ignore_index=True) if parts else None


def combine(space_file: str, blocks: list[str], into: str, overrides: list[str] = ()) -> int:
    """`cmisweep combine`: write DIR as the one sweep of SPACE from its blocks, then its reports."""
    from cmisweep.sweep.runner import report

    space = load_space(space_file, overrides)
    if space.algorithm.kind != "grid":
        raise ConfigError(space_file, "algorithm.kind", f"grid expected (combine reads a grid's points), got "
                                                        f"{space.algorithm.kind}")
    out = Path(into)
    if (out / "sweep.json").exists():
        raise ConfigError(None, "--into", f"{out} is a live sweep's directory (sweep.json); combine into a new one")
    dirs = [Path(b) for b in blocks]
    if out.resolve() in [d.resolve() for d in dirs]:
        raise ConfigError(None, "--into", f"{out} is one of the blocks")
    found, extra, frames = _select(space, dirs, space_file)
    keep = {d: [n for n, b in found.items() if b == d] for d in dirs}
    trials = _concat([frames[d][0][frames[d][0]["name"].isin(keep[d])] for d in dirs])
    epochs = _concat([f[1][f[1]["name"].isin(keep[d])] if f[1] is not None else None for d, f in frames.items()])
    histories = [f[2][f[2]["name"].isin(keep[d])] if f[2] is not None else None for d, f in frames.items()]
    if (out / EVALUATIONS_FILE).is_file():  # the combined sweep's own evaluations are kept
        histories.append(pd.read_parquet(out / EVALUATIONS_FILE))
    history = _concat(histories)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "space.yaml", yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    atomic_write(out / "trials.parquet", lambda p: trials.to_parquet(p, index=False))
    if epochs is not None:
        atomic_write(out / "epochs.parquet", lambda p: epochs.to_parquet(p, index=False))
    if history is not None:
        history = history.drop_duplicates(ignore_index=True)
        atomic_write(out / EVALUATIONS_FILE, lambda p: history.to_parquet(p, index=False))
    for name, d in found.items():
        model = d / MODELS_DIR / f"{name}.pt"
        if model.is_file():
            atomic_write(out / MODELS_DIR / model.name, lambda p, m=model: shutil.copyfile(m, p))
    print(f"combined {len(found)} trials from {len(dirs)} blocks into {out}"
          + (f"; left out (no point of {space_file}): {', '.join(extra)}" if extra else ""))
    return report(str(out))
