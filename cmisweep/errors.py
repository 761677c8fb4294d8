"""Errors a user can act on. Each carries the exit code the CLI uses for it.

Bad input (a config, a data file, a path) is exit code 2 and says which file, which key and what
was expected; the CLI prints the message on one line and no traceback.
"""
from __future__ import annotations

from pathlib import Path

from cmisweep.status import ExitCode


class CmisweepError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""

    exit_code = ExitCode.ERROR


class ConfigError(CmisweepError):
    """A config or search-space file is malformed: names the file, the key and what was expected."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, file: str | Path | None, key: str | None, expected: str):
        self.file = str(file) if file is not None else None
        self.key = key
        self.expected = expected
        # a command-line argument (file None, key "--out" or "SWEEP") is named alone
        where = ": ".join(w for w in (self.file, key) if w) or "<config>"
        super().__init__(f"{where}: {expected}")


class DataError(CmisweepError):
    """A data file is missing, truncated or corrupt: names the file."""

    exit_code = ExitCode.BAD_INPUT


class TrainingDiverged(CmisweepError):
    """The loss became non-finite; names the epoch and the step (both 1-based)."""

    exit_code = ExitCode.ERROR

    def __init__(self, epoch: int, step: int, detail: str = ""):
        self.epoch = epoch
        self.step = step
        msg = f"non-finite loss at epoch {epoch} step {step}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
