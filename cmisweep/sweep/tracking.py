"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial.

Two objects: SweepRun owns the parent run (the runner starts and finishes it); TrialLogger is a
Tune callback in the driver that writes each trial's child run, so one process writes to the store
(no "database is locked" under sqlite however many trials run at once) and the trials' per-step
path never touches MLflow. Runs are found again by tags, so a restored sweep reuses its parent and child runs
instead of creating new ones (the trap of MLflowLoggerCallback) and metrics already logged for an
epoch are not logged twice. A trial that Ray retries after a crash keeps its child run.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from cmisweep.errors import ConfigError
from cmisweep.status import EVALUATED, RunStatus, TrialStatus
from cmisweep.sweep.collect import error_message
from cmisweep.sweep.outbox import Outbox
from cmisweep.sweep.moasha import stop_reasons
from cmisweep.sweep.trainable import ERROR, STATUS, STOPPED_AT
from cmisweep.trial import flat_params
from cmisweep.vocabulary import is_number, plot_file

log = logging.getLogger(__name__)
TAG_SWEEP = "cmisweep.sweep_id"
TAG_ROLE = "cmisweep.role"
TAG_TRIAL = "cmisweep.trial_id"
TAG_REGULARIZER = "cmisweep.regularizer"  # the preset's name, a plug-in's included: search runs by it
TAG_FINAL = "cmisweep.final_logged"
TAG_STATUS = "cmisweep.status"
TAG_ERROR = "cmisweep.error"
TAG_STOPPED_AT = "cmisweep.stopped_at"
TAG_STOP_REASON = "cmisweep.stop_reason"  # MO-ASHA's: dominated, or collapsed
TUNE_KEYS = {"time_this_iter_s", "timestamp", "training_iteration", "pid", "time_total_s", "done",
             "iterations_since_restore", "time_since_restore", "checkpoint_dir_name"}


def check_uri(uri: str, file: str | None = None, key: str | None = "tracking.uri") -> None:
    """Refuse a tracking URI that cannot work, before anything starts."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(file, key, f"MLflow server {uri} is unreachable ({reason})") from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///"):]).parent
        probe = parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not _writable(probe):
            raise ConfigError(file, key, f"cannot write the sqlite store under {parent}")
    elif "://" not in uri and not uri.startswith(("databricks", "file:")):
        raise ConfigError(file, key, f"expected sqlite:///path, http(s)://host:port or file:/path, got {uri!r}")


def _writable(path: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


NOTE = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
HEADLINE_PLOTS = tuple(plot_file(c) for c in ("final/aolr", "final/eer_z", "final/mcas", "final/vc_mcas"))

# MLflow 3's UI opens an experiment without a kind as a GenAI one (traces, token usage); this tag
# makes it open cmisweep's on their training runs
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment_id(client: MlflowClient, experiment: str, artifact_root: Path | None) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    loc = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
    return client.create_experiment(experiment, artifact_location=loc, tags=dict([EXPERIMENT_KIND]))


def log_train_run(uri: str, experiment: str, cfg, metrics: dict, history: list[dict], out_dir: Path,
                  artifact_root: Path | None) -> str:
    """`cmisweep train`'s run: a trial without a parent, with what a sweep's child run has (params,
    per-epoch and final metrics, the artifacts and the model). Returns the run id."""
    from cmisweep.trial import flat_params

    client = MlflowClient(uri)
    run = client.create_run(_experiment_id(client, experiment, artifact_root), run_name=cfg.name,
                            tags={TAG_ROLE: "train", TAG_STATUS: TrialStatus.FINISHED,
                                  TAG_REGULARIZER: cfg.regularizer.preset})
    run_id = run.info.run_id
    params = [Param(k, str(v)[:6000]) for k, v in flat_params(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i: i + 100])
    points = [Metric(k, float(v), 0, int(h["epoch"])) for h in history for k, v in h.items()
              if k != "epoch" and is_number(v)]
    points += [Metric(f"final/{k}", float(v), 0, 0) for k, v in metrics.items() if is_number(v)]
    for i in range(0, len(points), 500):
        client.log_batch(run_id, metrics=points[i: i + 500])
    for f in sorted(out_dir.iterdir()):
        if f.name == "checkpoint.pt":  # the resumable training state stays local: the model is logged
            continue
        if f.is_dir():
            client.log_artifacts(run_id, str(f), f.name)
        else:
            client.log_artifact(run_id, str(f))
    client.set_terminated(run_id, RunStatus.FINISHED)
    return run_id


def _find_parent(client: MlflowClient, exp_id: str, sweep_id: str) -> str | None:
    found = client.search_runs([exp_id], f"tags.`{TAG_SWEEP}` = '{sweep_id}' and tags.`{TAG_ROLE}` = 'parent'",
                               max_results=1)
    return found[0].info.run_id if found else None


def _children(client: MlflowClient, exp_id: str, parent_id: str) -> dict[str, str]:
    """trial id -> child run id, from the runs' tags."""
    runs = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=50000)
    return {r.data.tags[TAG_TRIAL]: r.info.run_id for r in runs if TAG_TRIAL in r.data.tags}


class SweepRun:
    """The sweep's parent run: found again by its tags on resume, closed at the end (with any child
    run a trial left RUNNING), the reports logged to it."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, sweep_name: str, artifact_root: Path | None,
                 trial_outbox: Path | None = None):
        self.client = MlflowClient(uri)
        self.experiment, self.sweep_id, self.sweep_name, self.artifact_root = experiment, sweep_id, sweep_name, artifact_root
        self.parent_id: str | None = None
        self.outbox = Outbox()
        self.trial_outbox = trial_outbox  # where the TrialLogger records the calls it still holds

    def start(self, mark_running: bool = True) -> str:
        """Find or create the experiment and the parent run; mark it RUNNING."""
        self.exp_id = _experiment_id(self.client, self.experiment, self.artifact_root)
        self.parent_id = _find_parent(self.client, self.exp_id, self.sweep_id)
        if self.parent_id is None:
            run = self.client.create_run(self.exp_id, run_name=self.sweep_name,
                                         tags={TAG_SWEEP: self.sweep_id, TAG_ROLE: "parent"})
            self.parent_id = run.info.run_id
        elif mark_running:
            self.client.update_run(self.parent_id, status=RunStatus.RUNNING)
        return self.parent_id

    def unlogged(self, wait_s: float = 60.0) -> int:
        """Replay what the store did not take, retrying for up to wait_s; the calls still kept, the
        trial logger's included (it drained its own when the experiment ended)."""
        kept = self.outbox.drain(wait_s)
        return kept + (Outbox.read_count(self.trial_outbox) if self.trial_outbox else 0)

    def finish(self, status: str = RunStatus.FINISHED, unfinished_status: str | None = None) -> None:
        """Close the parent run; runs of trials that did not end are closed as `unfinished_status`
        (KILLED on Ctrl-C) so that none stays RUNNING. Kept for replay if the store is down."""
        def close() -> None:
            if unfinished_status:
                for run_id in _children(self.client, self.exp_id, self.parent_id).values():
                    if self.client.get_run(run_id).info.status == RunStatus.RUNNING:
                        self.client.set_terminated(run_id, unfinished_status)
            self.client.set_terminated(self.parent_id, status)

        self.outbox.call(close)

    def log_reports(self, reports: Path, trials) -> None:
        """The reports as the parent run's artifacts, and its description (what the MLflow UI shows
        first on the run's page): the KL(z)-vs-score plot and the headline tables."""
        from cmisweep.reports import headline

        def log() -> None:
            self.client.log_artifacts(self.parent_id, str(reports), "reports")
            plot = next((f for f in HEADLINE_PLOTS if (reports / f).is_file()), None)
            # served by the tracking server the UI runs on: relative to the UI's own address
            url = f"get-artifact?path=reports%2F{plot}&run_uuid={self.parent_id}" if plot else None
            claims_csv = reports / "claims.csv"
            claims = pd.read_csv(claims_csv) if claims_csv.is_file() and claims_csv.stat().st_size > 1 else None
            self.client.set_tag(self.parent_id, NOTE, headline(self.sweep_name, trials, claims, url))

        self.outbox.call(log)


class TrialLogger(tune.Callback):
    """A Tune callback in the driver: one child run per trial under the sweep's parent run (which
    SweepRun.start() created), its params, per-epoch and final metrics, status and artifacts."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, resolve, outbox_file: Path | None = None):
        self.uri, self.experiment, self.sweep_id = uri, experiment, sweep_id
        self.resolve = resolve  # (Tune config, trial id) -> the trial's one ResolvedTrial
        self.outbox_file = outbox_file  # SweepRun(trial_outbox=...) reads what it still holds at the end
        self._reset()

    def _reset(self) -> None:
        self.client = MlflowClient(self.uri)
        self.outbox = Outbox(self.outbox_file)
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}
        self.last_epoch: dict[str, int] = {}

    # Tune pickles its callbacks with the experiment and a restored sweep uses that copy: it finds
    # its runs again by their tags, not by state from another process.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k not in ("client", "parent_id", "children", "last_epoch", "exp_id", "outbox")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def setup(self, **info) -> None:
        self._runs()

    def _runs(self) -> None:
        if self.parent_id is None:
            self.exp_id = _experiment_id(self.client, self.experiment, None)
            self.parent_id = _find_parent(self.client, self.exp_id, self.sweep_id)
            if self.parent_id is None:
                raise RuntimeError(f"no parent run of sweep {self.sweep_id}: SweepRun.start() comes first")
            self.children = _children(self.client, self.exp_id, self.parent_id)

    def _child(self, trial) -> str:
        self._runs()
        tid = trial.trial_id
        if tid not in self.children:
            resolved = self.resolve(trial.config, tid)
            run = self.client.create_run(
                self.exp_id, run_name=resolved.name,
                tags={"mlflow.parentRunId": self.parent_id, TAG_TRIAL: tid, TAG_SWEEP: self.sweep_id,
                      TAG_ROLE: "trial", TAG_REGULARIZER: resolved.config.regularizer.preset})
            self.children[tid] = run.info.run_id
            params = flat_params(resolved.config)
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run.info.run_id, params=items[i: i + 100])
        return self.children[tid]

    def _last_epoch(self, run_id: str) -> int:
        if run_id not in self.last_epoch:
            hist = self.client.get_metric_history(run_id, "epoch")
            self.last_epoch[run_id] = int(max((m.step for m in hist), default=0))
        return self.last_epoch[run_id]

    def _safe(self, fn, *args) -> None:
        self.outbox.call(fn, *args)

    def on_experiment_end(self, trials, **info):
        self.outbox.drain()  # an outage at the very end: retry for a minute, then record what is left

    # --- Tune callbacks ----------------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._safe(lambda: self.client.update_run(self._child(trial), status=RunStatus.RUNNING))

    on_trial_restore = on_trial_start

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._safe(lambda: self.client.set_tag(self._child(trial), "cmisweep.recovered", "true"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._safe(self._log_result, trial, result)

    def _log_result(self, trial, result: dict) -> None:
        run_id = self._child(trial)
        epoch = int(result.get("epoch", 0))
        ts = int(result.get("timestamp", 0) * 1000)
        if result.get(STATUS) in EVALUATED:
            run = self.client.get_run(run_id)
            if run.data.tags.get(TAG_FINAL) != "true":
                finals = [Metric(k, float(v), ts, epoch) for k, v in result.items()
                          if k.startswith("final/") and is_number(v)]
                for i in range(0, len(finals), 500):
                    self.client.log_batch(run_id, metrics=finals[i: i + 500])
                self.client.set_tag(run_id, TAG_FINAL, "true")
            return
        if result.get(STATUS) == TrialStatus.FAILED:
            self.client.log_batch(run_id, tags=[RunTag(TAG_ERROR, str(result.get(ERROR, ""))[:5000])])
            return
        if epoch <= self._last_epoch(run_id):
            return  # logged before a restore: a re-run of the same epoch from its checkpoint
        metrics = [Metric(k, float(v), ts, epoch) for k, v in result.items()
                   if k not in TUNE_KEYS and not k.startswith("config") and is_number(v)]
        self.client.log_batch(run_id, metrics=metrics)
        self.last_epoch[run_id] = epoch

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._safe(self._complete, trial)

    def _complete(self, trial) -> None:
        run_id = self._child(trial)
        last = trial.last_result or {}
        status = last.get(STATUS)
        if status in EVALUATED and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as d:
                art = Path(d) / "artifacts"
                if art.is_dir():
                    self.client.log_artifacts(run_id, str(art))
        tags = []
        if status is None:  # stopped by the scheduler before the evaluation: its last result is an epoch's
            status = TrialStatus.STOPPED
            tags.append(RunTag(TAG_STOPPED_AT, str(int(last.get("epoch", 0)))))
        elif STOPPED_AT in last:
            tags.append(RunTag(TAG_STOPPED_AT, str(int(last[STOPPED_AT]))))
        why = stop_reasons(self.outbox_file.parent).get(trial.trial_id) if self.outbox_file is not None else None
        if status == TrialStatus.STOPPED and why:  # MO-ASHA's reason (moasha_rungs.json, by the outbox)
            tags.append(RunTag(TAG_STOP_REASON, why))
        self.client.log_batch(run_id, tags=[RunTag(TAG_STATUS, str(status)), *tags])
        self.client.set_terminated(run_id, RunStatus.FAILED if status == TrialStatus.FAILED else RunStatus.FINISHED)

    def on_trial_error(self, iteration, trials, trial, **info):
        def fail():
            run_id = self._child(trial)
            self.client.log_batch(run_id, tags=[RunTag(TAG_STATUS, TrialStatus.FAILED),
                                                RunTag(TAG_ERROR, error_message(trial)[:5000])])
            self.client.set_terminated(run_id, RunStatus.FAILED)

        self._safe(fail)


class EvaluationLogger:
    """`cmisweep evaluate`'s results in each trial's child run, found by its tags: the metrics as
    final/<name> (their latest value is what the MLflow UI shows) and, per metric group, the tag
    cmisweep.evaluation.<group> = the evaluation's id (evaluations.parquet has its settings). A
    sweep without a tracking store (a committed study) logs nothing."""

    def __init__(self, uri: str | None, experiment: str, sweep_id: str | None):
        self.client = MlflowClient(uri) if uri else None
        self.experiment, self.sweep_id = experiment, sweep_id
        self.outbox = Outbox()

    @classmethod
    def for_sweep(cls, sweep_dir: Path, space) -> "EvaluationLogger":
        import json

        meta_file = Path(sweep_dir) / "sweep.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        uri = meta.get("tracking_uri")
        if uri and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            uri = None  # a store that is gone: asking MLflow would create an empty one
        return cls(uri, space.tracking.experiment or space.name, meta.get("sweep_id"))

    def log(self, trial, rows: list[dict]) -> None:
        if self.client is None or not rows:
            return

        def log() -> None:
            exp = self.client.get_experiment_by_name(self.experiment)
            found = self.client.search_runs(
                [exp.experiment_id], f"tags.`{TAG_SWEEP}` = '{self.sweep_id}' and tags.`{TAG_TRIAL}` = "
                f"'{trial['trial_id']}'", max_results=1) if exp is not None else []
            if not found:
                return  # the trial has no child run (its store was replaced): the files hold the results
            run_id = found[0].info.run_id
            ts = int(time.time() * 1000)
            metrics = [Metric(r["column"], r["value"], ts, 0) for r in rows]
            tags = sorted({(f"cmisweep.evaluation.{r['metric']}", r["evaluation"]) for r in rows})
            for i in range(0, len(metrics), 500):
                self.client.log_batch(run_id, metrics=metrics[i: i + 500])
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags])

        self.outbox.call(log)

    def unlogged(self, wait_s: float = 60.0) -> int:
        return self.outbox.drain(wait_s) if len(self.outbox) else 0
