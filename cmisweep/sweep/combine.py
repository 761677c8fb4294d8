"""Sweeps run in sittings read as one: `cmisweep combine SPACE BLOCK... --into DIR` (docs/design.md 6.3).

A study too long for one sitting runs as blocks: each a complete grid sweep over some of the seeds
(or one arm of the design), committed when it ends. SPACE is the whole design. combine takes each
point of SPACE's grid from the block that ran it, checks that the block ran that point's trial as
SPACE would (every setting but the data's location), and writes DIR as one sweep: space.yaml
(SPACE), trials.parquet, epochs.parquet, evaluations.parquet, the kept models, and the reports.
Then `cmisweep report DIR` and `cmisweep evaluate DIR` work on it as on any committed sweep.

Bad input is one line and nothing written: a block that is no sweep or has an unreadable file, a
point whose trial differs from SPACE's, a point two blocks ran (a failed run counts as run), a point
no block ran (restrict SPACE with --set 'search.seeds=[...]' to what has run), a DIR that is a file
or another sweep's. A block's trial that is no point of SPACE is left out and listed. The
evaluations of DIR's own (a `cmisweep evaluate DIR`) are kept beside the blocks', all in time order.
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import yaml

from cmisweep.errors import ConfigError
from cmisweep.files import atomic_write, atomic_write_text
from cmisweep.reports.evaluations import HISTORY_COLUMNS
from cmisweep.sweep.runner import committed_trials, read_parquet, report
from cmisweep.sweep.space import grid_points, load_space, point_name, trial_config
from cmisweep.trial import flat_params
from cmisweep.vocabulary import EVALUATIONS_FILE, MODELS_DIR


def _history(d: Path) -> pd.DataFrame | None:
    p = d / EVALUATIONS_FILE
    return read_parquet(p, None, "evaluations", set(HISTORY_COLUMNS)) if p.is_file() else None


def _read_block(d: Path):
    """(its space, trials, epochs, evaluations) of one block; bad input if it is no readable sweep."""
    if not ((d / "space.yaml").is_file() and (d / "trials.parquet").is_file()):
        raise ConfigError(None, "BLOCK", f"no sweep at {d} (expected its space.yaml and trials.parquet)")
    trials, epochs = committed_trials(d)
    return load_space(d / "space.yaml", stored=True), trials, epochs, _history(d)


def _check_trial(space, block_space, point: dict, d: Path, space_file: str) -> None:
    """The block ran the point's trial as SPACE would: every setting but the data's location."""
    ours, theirs = flat_params(trial_config(space, point)), flat_params(trial_config(block_space, point))
    for key in sorted((set(ours) | set(theirs)) - {"data.path"}):
        if ours.get(key) != theirs.get(key):
            raise ConfigError(d / "space.yaml", f"trial.{key}", f"{theirs.get(key)!r} in {point_name(point)}, where "
                                                               f"{space_file} has {ours.get(key)!r}")


def _select(space, blocks: dict, space_file: str) -> tuple[dict, list[str]]:
    """{trial name: block} for every point of SPACE, and the blocks' trials that are no point of it."""
    points = {point_name(p): p for p in grid_points(space)}
    found, extra = {}, []
    for d, (block_space, trials, _, _) in blocks.items():
        for name in trials["name"]:
            if name not in points:
                extra.append(f"{d.name}/{name}")
            elif name in found:
                raise ConfigError(d / "trials.parquet", name,
                                  f"also run by {found[name]}: each point comes from one block")
            else:
                _check_trial(space, block_space, points[name], d, space_file)
                found[name] = d
    missing = [n for n in points if n not in found]
    if missing:
        raise ConfigError(space_file, "search", f"{len(missing)} of its {len(points)} points are in no block "
                          f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); restrict it to what the "
                          "blocks ran, e.g. --set 'search.seeds=[...]'"
                          + (f"; the blocks' trials that are no point of it: {', '.join(extra[:4])}" if extra else ""))
    return found, extra


def _check_into(out: Path, space) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(None, "--into", f"{out} is a file; expected a directory")
    if (out / "sweep.json").exists():
        raise ConfigError(None, "--into", f"{out} is a live sweep's directory (sweep.json); combine into another")
    if (out / "space.yaml").is_file():
        try:
            name = (yaml.safe_load((out / "space.yaml").read_text()) or {}).get("name")
        except (yaml.YAMLError, AttributeError):
            name = None
        if name != space.name:
            raise ConfigError(None, "--into",
                              f"{out} holds sweep {name!r}; combine writes {space.name!r} (another DIR)")


def _parquet(frame: pd.DataFrame, what: str) -> bytes:
    """The file's bytes, made before anything is written: blocks whose columns do not fit one table
    are bad input, not a half-written DIR."""
    buf = io.BytesIO()
    try:
        frame.to_parquet(buf, index=False)
    except (ValueError, TypeError, ImportError) as e:
        raise ConfigError(None, "BLOCK", f"the blocks' {what} do not fit one table ({e})") from None
    return buf.getvalue()


def _tables(blocks: dict, found: dict, out: Path) -> dict[str, bytes | None]:
    """trials, epochs and evaluations of the points, each from the block that ran it; DIR's own
    evaluations kept; every evaluation in time order (the last of a metric is the one reports use)."""
    def rows(frame, d):
        return None if frame is None else frame[frame["name"].isin([n for n, b in found.items() if b == d])]

    trials = pd.concat([rows(b[1], d) for d, b in blocks.items()], ignore_index=True)
    epochs = [rows(b[2], d) for d, b in blocks.items() if b[2] is not None]
    histories = [rows(b[3], d) for d, b in blocks.items() if b[3] is not None]
    own = _history(out)
    if own is not None:
        histories.append(own[own["name"].isin(list(found))])
    history = pd.concat(histories, ignore_index=True).drop_duplicates(ignore_index=True) if histories else None
    if history is not None:
        history = history.sort_values("evaluated_at", kind="stable", ignore_index=True)
    return {"trials.parquet": _parquet(trials, "trials"),
            "epochs.parquet": _parquet(pd.concat(epochs, ignore_index=True), "epochs") if epochs else None,
            EVALUATIONS_FILE: _parquet(history, "evaluations") if history is not None and len(history) else None}


def _write(out: Path, space, tables: dict, found: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "space.yaml", yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    for name, data in tables.items():
        if data is None:
            (out / name).unlink(missing_ok=True)  # none of the points has it now: an old copy would mislead
        else:
            atomic_write(out / name, lambda p, b=data: p.write_bytes(b))
    models = out / MODELS_DIR
    for stale in models.glob("*.pt") if models.is_dir() else []:
        if stale.stem not in found:
            stale.unlink()
    for name, d in found.items():
        model = d / MODELS_DIR / f"{name}.pt"
        if model.is_file():
            atomic_write(models / model.name, lambda p, m=model: shutil.copyfile(m, p))


def combine(space_file: str, blocks: list[str], into: str, overrides: list[str] = ()) -> int:
    """`cmisweep combine`: write DIR as the one sweep of SPACE from its blocks, then its reports."""
    space = load_space(space_file, overrides)
    if space.algorithm.kind != "grid":
        raise ConfigError(space_file, "algorithm.kind", f"grid expected (combine reads a grid's points), got "
                                                        f"{space.algorithm.kind}")
    out = Path(into)
    _check_into(out, space)
    dirs = [Path(b) for b in blocks]
    if out.resolve() in [d.resolve() for d in dirs]:
        raise ConfigError(None, "--into", f"{out} is one of the blocks")
    read = {d: _read_block(d) for d in dirs}
    found, extra = _select(space, read, space_file)
    tables = _tables(read, found, out)
    _write(out, space, tables, found)
    no_epochs = [d.name for d, b in read.items() if b[2] is None and d in found.values()]
    print(f"combined {len(found)} trials from {len(dirs)} blocks into {out}"
          + (f"; left out (no point of {space_file}): {', '.join(extra)}" if extra else "")
          + (f"; no per-epoch history in {', '.join(no_epochs)}" if no_epochs else ""))
    return report(str(out))
