"""MO-ASHA on Ray Tune (Schmucker et al. 2021; docs/design.md 6.2): ASHA's rungs on `epoch`, each
rung decided on several objectives by cmisweep.sweep.mo_rungs (non-dominated sorting, then
hypervolume contribution against the fixed reference point).

- The objectives are the space's final metrics read per epoch (`per_epoch`): final/test/kl_z is
  val/kl_z, final/aolr the per-epoch probe val/aolr (cmisweep.metrics.probes.epoch_aolr).
- Seed replicates: the rung ranks each point's mean over the replicates recorded there so far (a
  point is its config without the seed, as the searchers see it); a replicate that reaches a rung
  is judged by its point's place.
- Collapse: a trial whose val KL(z) has stayed below the collapse threshold at every epoch from
  `collapse_min_epoch` on is stopped as collapsed, and is always evaluated (an outcome, not a
  failure of the sweep). A dominated trial is evaluated only with `evaluate_stopped`.
- Resume: Tune does not restore a scheduler's state, so the rung records are written to the sweep
  directory after every decision (moasha_rungs.json) and read back when the scheduler is made.
Public Tune API only: a FIFOScheduler whose on_trial_result returns CONTINUE or STOP.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import ray
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from cmisweep.files import atomic_write_text
from cmisweep.sweep import mo_rungs
from cmisweep.sweep.early_stop import StopBoard, board_name
from cmisweep.vocabulary import COLLAPSE_KL, KL

RUNGS_FILE = "moasha_rungs.json"


def per_epoch(metric: str) -> str:
    """The per-epoch reading of a final objective: final/test/kl_z -> val/kl_z, final/aolr -> val/aolr."""
    name = metric.removeprefix("final/").removeprefix("test/").removeprefix("val/")
    return f"val/{name}"


def rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """ASHA's rung epochs below max_t: grace, grace * eta, grace * eta^2, ..."""
    out, r = [], float(grace_period)
    while round(r) < max_t:
        out.append(int(round(r)))
        r *= reduction_factor
    return sorted(set(out))


def point_key(config: dict) -> str:
    """A trial's point without its seed (replicates share it)."""
    point = {k: v for k, v in (config.get("point") or {}).items() if k != "seed"}
    return json.dumps(point, sort_keys=True, default=str)


def stop_reasons(sweep_dir: str | Path) -> dict[str, str]:
    """trial id -> why MO-ASHA stopped it ('dominated' or 'collapsed'), from a sweep's records."""
    path = Path(sweep_dir) / RUNGS_FILE
    if not path.exists():
        return {}
    return {tid: stop["why"] for tid, stop in json.loads(path.read_text()).get("stopped", {}).items()}


def with_stop_reasons(trials, sweep_dir: str | Path):
    """trials.parquet's frame with `stop_reason` where MO-ASHA stopped a trial (else unchanged)."""
    reasons = stop_reasons(sweep_dir)
    if not reasons or not len(trials):
        return trials
    return trials.assign(stop_reason=trials["trial_id"].map(reasons))


class MOASHA(FIFOScheduler):
    def __init__(self, *, sweep: str, objectives: list[tuple[str, str]], ref: list[float], max_t: int,
                 grace_period: int, reduction_factor: float, evaluate_stopped: bool,
                 collapse_min_epoch: int | None, records: str | Path | None):
        super().__init__()
        self.sweep, self.max_t, self.eta = sweep, max_t, reduction_factor
        self.metrics = [per_epoch(m) for m, _ in objectives]
        self.signs = [1.0 if mode == "min" else -1.0 for _, mode in objectives]  # every objective minimized
        self.ref = np.array([s * r for s, r in zip(self.signs, ref)], float)
        self.rungs = rungs(grace_period, reduction_factor, max_t)
        self.evaluate_stopped, self.collapse_min_epoch = evaluate_stopped, collapse_min_epoch
        self.path = Path(records) if records else None
        self.state = self._saved()
        self._board = None

    def _saved(self) -> dict:
        """The rung records written so far (a resumed sweep's), else empty ones."""
        if self.path is not None and self.path.exists():
            return json.loads(self.path.read_text())
        return {"rungs": {}, "kl": {}, "stopped": {}}

    def __getstate__(self) -> dict:  # Tune pickles its scheduler; an actor handle is not state
        return {**self.__dict__, "_board": None}

    def __setstate__(self, state: dict) -> None:
        # Tune.restore unpickles the scheduler as it was made: the records come from the file
        self.__dict__.update(state)
        self.state = self._saved()

    @property
    def uses_board(self) -> bool:
        """Whether trials read the stop board after each epoch (sweep.trainable): to be evaluated
        when stopped, a collapse stop always and a dominated stop with evaluate_stopped."""
        return self.evaluate_stopped or self.collapse_min_epoch is not None

    def decide(self, trial_id: str, key: str, result: dict) -> str | None:
        """None to go on, or why the trial stops: 'collapsed' or 'dominated' (at this epoch)."""
        epoch = int(result["epoch"])
        seen = self.state["kl"].setdefault(trial_id, {})
        seen[str(epoch)] = float(result.get(per_epoch(KL), np.nan))
        kl = [seen.get(str(e), np.nan) for e in range(1, epoch + 1)]
        if epoch >= self.max_t:
            return None  # the last epoch: on to its evaluation
        prior = self.state["stopped"].get(trial_id)
        if prior is not None and epoch >= prior["epoch"]:
            # stopped before a driver kill that came before Tune acted on it: the trial is back from its
            # checkpoint, and the decision stands (ranked again among more trials, it could go on)
            return prior["why"]
        if self.collapse_min_epoch is not None and mo_rungs.collapsed_for_good(kl, COLLAPSE_KL, self.collapse_min_epoch):
            return "collapsed"
        if epoch not in self.rungs:
            return None
        values = [s * float(result.get(m, np.nan)) for s, m in zip(self.signs, self.metrics)]
        rung = self.state["rungs"].setdefault(str(epoch), {})
        rung[trial_id] = {"point": key, "values": values}
        points = {}
        for rec in rung.values():  # each point's mean over its replicates recorded at this rung
            points.setdefault(rec["point"], []).append(rec["values"])
        keys = list(points)
        means = np.array([np.nanmean(np.array(points[k], float), axis=0) for k in keys])
        means = np.where(np.isfinite(means), means, self.ref)  # a missing reading ranks as the reference
        return None if mo_rungs.goes_on(means, keys.index(key), self.eta, self.ref) else "dominated"

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if "epoch" not in result:
            return TrialScheduler.CONTINUE
        why = self.decide(trial.trial_id, point_key(trial.config), result)
        if why is not None:
            self.state["stopped"][trial.trial_id] = {"epoch": int(result["epoch"]), "why": why}
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.state))
        through_board = why == "collapsed" or (why is not None and self.evaluate_stopped)
        if self.uses_board:
            if self._board is None:
                self._board = StopBoard.options(name=board_name(self.sweep), get_if_exists=True).remote()
            ray.get(self._board.judge.remote(trial.trial_id, int(result["epoch"]), through_board))
        if why is None or through_board:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP
