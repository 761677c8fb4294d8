"""Status words and exit codes, defined once: a trial's status in its last result, trials.parquet,
MLflow's `cmisweep.status` tag and the summary table; the words Ray Tune and MLflow use; the
exit codes of the command line."""
from __future__ import annotations

from enum import IntEnum, StrEnum


class TrialStatus(StrEnum):
    FINISHED = "FINISHED"  # trained every epoch and evaluated
    STOPPED = "STOPPED"  # stopped early by the scheduler (evaluated only with scheduler.evaluate_stopped)
    FAILED = "FAILED"  # diverged or raised
    UNFINISHED = "UNFINISHED"  # still running or pending when the sweep ended (interrupted)


EVALUATED = (TrialStatus.FINISHED, TrialStatus.STOPPED)  # statuses whose trials may carry final metrics


class TuneStatus(StrEnum):
    """Ray Tune's Trial.status values that cmisweep reads."""

    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


class RunStatus(StrEnum):
    """MLflow run statuses that cmisweep sets."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class ExitCode(IntEnum):
    OK = 0  # every trial ended as planned
    ERROR = 1  # a failed run (e.g. `cmisweep train` diverged)
    BAD_INPUT = 2  # a config, data file or path is wrong: one line names it
    FAILED_TRIALS = 3  # the sweep finished with failed trials
    NOTHING_EVALUATED = 4  # every trial stopped early by the scheduler before its evaluation
    TRACKING_INCOMPLETE = 5  # the sweep ran, but MLflow did not take all of it (a server that stayed down)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: resume with --resume
