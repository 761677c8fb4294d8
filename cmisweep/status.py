"""The status words of a trial, defined once: in its last result, trials.parquet, MLflow's
`cmisweep.status` tag and the summary table."""
from __future__ import annotations

from enum import StrEnum


class TrialStatus(StrEnum):
    FINISHED = "FINISHED"  # trained every epoch and evaluated
    STOPPED = "STOPPED"  # stopped early by the scheduler (evaluated only with scheduler.evaluate_stopped)
    FAILED = "FAILED"  # diverged or raised
    UNFINISHED = "UNFINISHED"  # still running or pending when the sweep ended (interrupted)


EVALUATED = (TrialStatus.FINISHED, TrialStatus.STOPPED)  # statuses whose trials may carry final metrics
