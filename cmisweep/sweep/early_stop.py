"""ASHA early stopping with epochs as its time, and the option to evaluate the trials it stops.

Ray's ASHA stops a trial by ending its actor, so the trial never reaches its evaluation. Two
rules make it fit a trainable that evaluates after its last epoch:
- a trial that reaches the last epoch is never stopped there (`stop_last_trials=False`): it goes
  on to its evaluation;
- with `scheduler.evaluate_stopped`, ASHA's STOP becomes a request on a board (a named Ray actor)
  that the trial reads after each epoch; the trial then stops training and evaluates its best
  epoch so far, and its last result says STOPPED with the rung (`cmisweep/stopped_at`). Ray
  releases a function trial as soon as it reports, so the scheduler also marks every epoch it has
  judged, and the trial waits for its epoch's mark before it reads the board: where a trial
  stops does not depend on timing.
"""
from __future__ import annotations

import time

import ray
from ray.tune.schedulers import ASHAScheduler, TrialScheduler



def board_name(sweep: str) -> str:
    return f"cmisweep-stop-board-{sweep}"


@ray.remote(num_cpus=0)
class StopBoard:
    """Trial id -> the epoch (rung) at which ASHA asked it to stop, and the last epoch it judged."""

    def __init__(self):
        self.stops: dict[str, int] = {}
        self.judged: dict[str, int] = {}

    def judge(self, trial_id: str, epoch: int, stop: bool) -> None:
        if stop:
            self.stops.setdefault(trial_id, epoch)
        self.judged[trial_id] = max(epoch, self.judged.get(trial_id, 0))

    def decision(self, trial_id: str) -> tuple[int, int | None]:
        """(the last epoch judged, the rung at which a stop was requested or None)."""
        return self.judged.get(trial_id, 0), self.stops.get(trial_id)


def stop_requested(sweep: str, trial_id: str, epoch: int, wait_s: float = 60.0) -> int | None:
    """The rung at which ASHA stopped this trial, if it did, once the scheduler has judged `epoch`
    (called by the trainable after it reports that epoch). If the driver does not judge it within
    `wait_s` (it may have died), the trial goes on: its next epoch is judged after a restore."""
    deadline = time.monotonic() + wait_s
    while True:
        try:  # the scheduler creates the board and holds it (Ray collects a named actor without handles)
            judged, rung = ray.get(ray.get_actor(board_name(sweep)).decision.remote(trial_id))
        except ValueError:  # not created yet
            judged, rung = 0, None
        if judged >= epoch or rung is not None or time.monotonic() > deadline:
            return rung
        time.sleep(0.02)


class EpochASHA(ASHAScheduler):
    """ASHAScheduler on `epoch`, that lets a trial finish its last epoch and, when `evaluate_stopped`,
    turns STOP into a request the trial acts on (see the module docstring)."""

    def __init__(self, *, sweep: str, evaluate_stopped: bool, **kwargs):
        super().__init__(time_attr="epoch", stop_last_trials=False, **kwargs)
        self.sweep, self.evaluate_stopped = sweep, evaluate_stopped
        self._board = None

    def __getstate__(self) -> dict:  # Tune pickles its scheduler; an actor handle is not state
        return {**self.__dict__, "_board": None}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if self.evaluate_stopped and "epoch" in result:
            if self._board is None:
                self._board = StopBoard.options(name=board_name(self.sweep), get_if_exists=True).remote()
            stop = decision == TrialScheduler.STOP
            ray.get(self._board.judge.remote(trial.trial_id, int(result["epoch"]), stop))
            return TrialScheduler.CONTINUE if stop else decision
        return decision
