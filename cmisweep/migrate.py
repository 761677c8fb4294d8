"""Stored files in today's names: the one place that knows the names they were written with.

A sweep's space.yaml (results/<sweep>/space.yaml, every field dumped), a trial's trial.yaml and a
saved model's config (model/extra_files/trial.yaml) hold whatever names the version that wrote them
used. Every reader of such a stored copy passes it through `current` before validating it, so old
sweeps resume and report and old models load. A file a user writes is not migrated: its old names
are refused with today's (`refusal`), so that no new file is written with them.

trials.parquet has kept its column names (its `gamma` is the searched gamma, as today), so it needs
no entry here.

This module imports nothing from cmisweep: the configs below every reader use it too.
"""
from __future__ import annotations

import copy
from typing import Literal

# Renamed keys of a trial config: old dotted key -> (today's key, why, for the refusal's message).
TRIAL_RENAMES: dict[str, tuple[str, str]] = {
    # J's own gamma (w_c) is not the paper's gamma axis for beta / advmi (docs/design.md section 1)
    "regularizer.gamma": ("regularizer.knob", "the paper's gamma axis; J's weights w_z, w_m, w_c follow "
                                              "from the preset"),
}

Kind = Literal["trial", "space"]


def current(raw: dict, kind: Kind) -> dict:
    """A stored trial config (kind "trial") or search space ("space", whose `trial` is a trial
    config) in today's names, as a new mapping. A file that holds an old key and its new one
    alike is left as it is: validation then refuses the old key rather than one being guessed."""
    out = copy.deepcopy(raw)
    trial = out if kind == "trial" else out.get("trial")
    if isinstance(trial, dict):
        for old, (new, _) in TRIAL_RENAMES.items():
            _move(trial, old, new)
    return out


def refusal(section: str, data: dict) -> str | None:
    """The message refusing an old key of a trial config in a file a user wrote; `section` is the
    dotted key `data` sits at ("regularizer")."""
    for old, (new, why) in TRIAL_RENAMES.items():
        where, _, key = old.rpartition(".")
        if where == section and key in data:
            return f"{old} is now {new} ({why})"
    return None


def _move(data: dict, old: str, new: str) -> None:
    *path, key = old.split(".")
    node = data
    for part in path:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    *new_path, new_key = new.split(".")
    target = data
    for part in new_path:
        target = target.get(part)
        if not isinstance(target, dict):
            return
    if key in node and new_key not in target:
        target[new_key] = node.pop(key)
