"""Terminal progress of a sweep: a line per trial epoch and per finished trial, then a table."""
from __future__ import annotations

import sys
import time

import pandas as pd
from ray import tune

from cmisweep.status import EVALUATED, TrialStatus, TuneStatus
from cmisweep.sweep.trainable import ERROR, STATUS, STOPPED_AT
from cmisweep.vocabulary import KL, short

SUMMARY_COLUMNS = ["name", "status", "stopped_at", "final/test/kl_z", "final/aolr", "final/mcas", "final/eer_z", "final/eer_s",
                   "final/vc_mcas", "final/ihat_exact", "final/test/elbo", "error"]


def _f(v, spec=".3g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


class Progress(tune.Callback):
    def __init__(self, total: int, epochs: int, name_of, verbose: bool = True):
        self.total, self.epochs, self.name_of, self.verbose = total, epochs, name_of, verbose
        self.t0 = time.time()

    def setup(self, **info):
        self.t0 = time.time()

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"[{(time.time() - self.t0) / 60:5.1f} min] {text}", file=sys.stderr, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = self.name_of(trial.config, trial.trial_id)
        if result.get(STATUS) in EVALUATED:
            shown = "  ".join(f"{short(k)}={_f(result[k])}" for k in (
                KL, "final/aolr", "final/mcas", "final/eer_z", "final/eer_s", "final/vc_mcas") if k in result)
            stop = f" (stopped by the scheduler at epoch {result[STOPPED_AT]})" if STOPPED_AT in result else ""
            self._say(f"{name}: evaluated{stop}  {shown}")
        elif result.get(STATUS) == TrialStatus.FAILED:
            self._say(f"{name}: FAILED: {result.get(ERROR)}")
        elif "val/objective" in result:
            self._say(f"{name}: epoch {result.get('epoch')}/{self.epochs}  objective={_f(result['val/objective'])}  "
                      f"elbo={_f(result.get('val/elbo'))}  KL(z)={_f(result.get('val/kl_z'))}  "
                      f"({_f(result.get('time/epoch_s', 0), '.0f')} s)")

    def _done(self, trials, trial) -> int:
        # counted from Tune's trial list: right after a restore too
        return sum(t.status in (TuneStatus.TERMINATED, TuneStatus.ERROR) or t is trial for t in trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        how = "done"
        if STATUS not in last:  # the scheduler ended it after an epoch, before any evaluation
            how = f"stopped by the scheduler at epoch {last.get('epoch')}, not evaluated"
        self._say(f"{self.name_of(trial.config, trial.trial_id)} {how} ({self._done(trials, trial)}/{self.total} trials)")

    def on_trial_error(self, iteration, trials, trial, **info):
        from cmisweep.sweep.collect import error_message

        self._say(f"{self.name_of(trial.config, trial.trial_id)}: ERROR: {error_message(trial)} "
                  f"({self._done(trials, trial)}/{self.total} trials)")


def summary_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no trials)"
    cols = [c for c in SUMMARY_COLUMNS if c in frame.columns and (c != "stopped_at" or frame[c].notna().any())]
    shown = frame[cols].rename(columns=lambda c: c.replace("final/", ""))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
