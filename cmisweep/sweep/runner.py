"""`cmisweep run SPACE.yaml`: validate, start (or join) Ray, run the trials, track, report.

Layout of results/<name>/:
    space.yaml      the space as run, overrides and the data path resolved (a resume reads it)
    sweep.json      the sweep's id (it finds the MLflow parent run again), tracking URI, storage
    tune/           Ray Tune's experiment state and trial checkpoints (unless on shared storage)
    tune-state/     the last complete copy of Tune's experiment state (cmisweep.sweep.state_backup)
    optuna.db       the Optuna study of a sampled sweep (tpe / nsga2): what the sampler was told
    trials.parquet, frontier.parquet, reports/   the reports (cmisweep.reports)

Exit codes: cmisweep.status.ExitCode.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import yaml

from cmisweep.errors import ConfigError
from cmisweep.files import atomic_write_text
from cmisweep.status import ExitCode, RunStatus, TrialStatus
from cmisweep.sweep import storage as shared_storage
from cmisweep.sweep.space import SearchSpace, load_space
from cmisweep.vocabulary import MODELS_DIR


def find_sweep(sweep: str, results_root: str | Path) -> Path:
    """The directory of a sweep that a command names (report, ui): a path (it has a separator, or
    is a directory holding sweep.json or a committed sweep's files) as is, a bare name under the
    results root."""
    p = Path(sweep)
    here = (p / "sweep.json").is_file() or ((p / "space.yaml").is_file() and (p / "trials.parquet").is_file())
    return p if ("/" in sweep or here) else Path(results_root) / sweep


def sweep_dir_for(space: SearchSpace, results_root: Path, file: str | None) -> Path:
    """Where a space's sweep goes: under the results root by its name, never anywhere else."""
    root = results_root.resolve()
    d = (root / space.name).resolve()
    if d.parent != root:  # the name check already refuses this; a second guard costs nothing
        raise ConfigError(file, "name", f"sweep directory {d} would leave {root}")
    return d


def preflight(space: SearchSpace, file: str, address: str | None, resources: bool = True) -> None:
    """Checks that need the machine, so a bad setup fails before anything is written or started:
    the data load (files found, checksums right, audio readable), and a local run has the GPUs
    the space asks for. Loading once here costs seconds; a corrupt file found by every trial
    instead would cost a sweep of failed trials."""
    from cmisweep.data import load_dataset

    given = space.trial.data.path
    if given is not None and not Path(given).exists():
        raise ConfigError(file, "trial.data.path", f"{given} does not exist")
    load_dataset(space.trial.data)
    if address:
        check_address(address)
    if not resources:  # a dry run plans here a sweep that may be meant for a cluster
        return
    if not address and space.resources.cpu > (os.cpu_count() or 1):
        # Ray would never find a node for the trials: the sweep would wait forever
        raise ConfigError(file, "resources.cpu", f"{space.resources.cpu:g} CPUs per trial, but this machine has "
                          f"{os.cpu_count()}: lower it (--set resources.cpu=1), or run on a cluster (--address)")
    if space.resources.gpu > 0 and not address:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(file, "resources.gpu", f"{space.resources.gpu:g} GPU per trial, but this machine has no "
                              "GPU: run on a GPU cluster (ray up cluster/gpu.yaml), or add --set resources.gpu=0")


def check_address(address: str) -> None:
    """A Ray cluster the user named (--address, RAY_ADDRESS) must answer; 'auto' is left to Ray."""
    if address in ("local", "auto"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        named = "$RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") == address else "--address"
        raise ConfigError(named, None,
                          f"no Ray cluster answers at {address} ({e}); start it (ray up, ray start --head) or "
                          "leave --address and RAY_ADDRESS unset for a local Ray") from None


def tracking_uri_of(space: SearchSpace, tracking_uri: str | None, results_root: Path, file: str | None):
    """The store of a new sweep: cmisweep.tracking_uri's rule, the space's tracking.uri second."""
    from cmisweep.tracking_uri import tracking_uri as rule

    return rule(tracking_uri, space.tracking.uri, results_root, file)


def check(path: str, *, address: str | None = None, tracking_uri: str | None = None,
          results_root: str | Path = "results", overrides: list[str] | tuple = (),
          storage: str | None = None) -> SearchSpace:
    """Everything a run checks before it starts, without starting it (`cmisweep run --dry-run`)."""
    from cmisweep.sweep import tracking

    space = load_space(path, overrides)
    tracking.check_uri(*tracking_uri_of(space, tracking_uri, Path(results_root), path))
    preflight(space, path, address or os.environ.get("RAY_ADDRESS"), resources=False)
    if storage or os.environ.get("CMISWEEP_STORAGE"):
        shared_storage.check(storage or os.environ["CMISWEEP_STORAGE"], "--storage" if storage else "$CMISWEEP_STORAGE")
    return space


def pin_data_path(space: SearchSpace) -> SearchSpace:
    """Trials run in Ray's working directories, not the user's: give them the data directory the
    driver found ($CMISWEEP_DATA, ./data, ...) as an absolute path."""
    from cmisweep.data import locate

    found = str(locate(space.trial.data).resolve())
    data = space.trial.data.model_copy(update={"path": found})
    return space.model_copy(update={"trial": space.trial.model_copy(update={"data": data})})


def run(path: str, *, resume: bool = False, address: str | None = None, tracking_uri: str | None = None,
        results_root: str | Path = "results", dashboard: bool = False, verbose: bool = True,
        overrides: list[str] | tuple = (), storage: str | None = None) -> int:
    from cmisweep.sweep import tracking
    from cmisweep.tracking_uri import tracking_uri as uri_rule

    results_root = Path(results_root)
    space = load_space(path, overrides)
    sweep_dir = sweep_dir_for(space, results_root, path)
    state = sweep_dir / "sweep.json"
    if resume:
        if not state.exists():
            raise ConfigError(path, "name", f"nothing to resume: {sweep_dir} holds no sweep (run without --resume)")
        meta = json.loads(state.read_text())
        space = load_space(sweep_dir / "space.yaml", stored=True)  # the space the sweep started with
        # the store the sweep started with (sweep.json), unless the command line names another
        store = uri_rule(tracking_uri, meta["tracking_uri"], results_root, state)
    else:
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise ConfigError(path, "name", f"{sweep_dir} already holds a sweep: add --resume to continue it, "
                                            "or give the space another name")
        store = tracking_uri_of(space, tracking_uri, results_root, path)
        meta = {"sweep_id": uuid.uuid4().hex, "tracking_uri": store.uri, "name": space.name}
    tracking.check_uri(*store)
    uri = store.uri
    address = address or os.environ.get("RAY_ADDRESS")
    preflight(space, path, address)
    space = pin_data_path(space)
    where = "--storage" if storage else "$CMISWEEP_STORAGE"
    storage_uri = meta.get("storage") or storage or os.environ.get("CMISWEEP_STORAGE")
    if storage_uri:
        shared_storage.check(storage_uri, where)
    meta["storage"] = storage_uri

    # nothing was written before this point: a bad input leaves no trace
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_text(sweep_dir / "space.yaml", yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
        atomic_write_text(state, json.dumps(meta, indent=2))
    return _execute(space, sweep_dir, meta, uri, resume=resume, address=address, dashboard=dashboard,
                    verbose=verbose)


def experiment_dir(sweep_dir: Path, meta: dict) -> str:
    """Where Tune keeps the experiment: results/<name>/tune, or <storage>/<name>/tune on a
    cluster (storage shared by all nodes, e.g. s3://bucket/prefix)."""
    if meta.get("storage"):
        return shared_storage.join(meta["storage"], meta["name"], "tune")
    return str(sweep_dir / "tune")


def ray_init_options(address: str | None, dashboard: bool = False, space=None) -> dict:
    """Safe defaults: no dashboard unless asked, and then on 127.0.0.1 only (reach it through a
    tunnel); trial output stays in the trials' logs. The space's plug-ins that are not installed
    packages travel to every worker, on this machine or a cluster (runtime_env py_modules)."""
    from cmisweep.plugins import runtime_modules
    from cmisweep.sweep.space import plugin_refs

    init = dict(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=False,
                configure_logging=True, logging_level="WARNING")
    modules = runtime_modules(plugin_refs(space)) if space is not None else []
    if modules:
        init["runtime_env"] = {"py_modules": modules}
    if address:
        init["address"] = address
    else:
        # a Ray of our own even when `ray start` left a cluster (or its address file) on this
        # machine: ray.init() would join that one and refuse the local-only option below
        init["address"] = "local"
        init["object_store_memory"] = 256 * 1024**2  # trials exchange small results, not tensors
    return init


def _tune_environment() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # a tracking server that is down: fail a call in seconds and keep it for replay (sweep.outbox)
    # rather than block Tune's loop through MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: our lines only
    # snapshot the experiment state after every result (results come once per epoch): a driver
    # killed at any moment then loses at most the epoch in flight
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # the searcher's objectives are final metrics, in a trial's last result only (cmisweep.sweep.search)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def _new_tuner(space, sweep_dir: Path, trainable, storage_root: str, callbacks: list, name_of):
    from ray import tune

    from cmisweep.sweep import search

    return tune.Tuner(
        trainable,
        param_space=search.param_space(space),
        tune_config=tune.TuneConfig(
            search_alg=search.search_algorithm(space, str(sweep_dir / "optuna.db")),
            scheduler=search.scheduler(space, sweep_dir),
            num_samples=search.num_samples(space), max_concurrent_trials=space.concurrency,
            # a finished trial's worker takes the next trial: no new process and no
            # second import of torch, ~7 s a trial (BENCHMARKS.md section 9)
            reuse_actors=True,
            trial_name_creator=lambda t: name_of(t.config, t.trial_id),
            trial_dirname_creator=lambda t: f"{name_of(t.config, t.trial_id)}_{t.trial_id}"),
        run_config=tune.RunConfig(
            name="tune", storage_path=storage_root, callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=space.max_failures)),
    )


def _fit(make_tuner, address: str | None) -> bool:
    """Run the trials; True when Ctrl-C interrupted them (Tune saves its state and returns)."""
    import ray

    from cmisweep.sweep.trainable import node_scratch

    try:
        make_tuner().fit()
        return False
    except KeyboardInterrupt:
        return True
    finally:
        # a Ray of our own runs its nodes here: their scratch dirs go with them (a cluster's stay
        # with its nodes, whose later trials may restore from them)
        ours = [n["NodeID"] for n in ray.nodes()] if address in (None, "", "local") and ray.is_initialized() else []
        ray.shutdown()
        for node in ours:
            shutil.rmtree(node_scratch(node), ignore_errors=True)


def _execute(space, sweep_dir: Path, meta: dict, uri: str, *, resume: bool, address: str | None, dashboard: bool,
             verbose: bool) -> int:
    import ray
    from ray import tune

    from cmisweep.sweep import search
    from cmisweep.sweep.progress import Progress
    from cmisweep.sweep.state_backup import StateBackup, repair
    from cmisweep.sweep.tracking import SweepRun, TrialLogger
    from cmisweep.sweep.trainable import make_trainable

    _tune_environment()
    resolved: dict[str, search.ResolvedTrial] = {}

    def resolve(config: dict, trial_id: str) -> search.ResolvedTrial:
        if trial_id not in resolved:
            resolved[trial_id] = search.resolve(space, config, trial_id)
        return resolved[trial_id]

    def name_of(config: dict, trial_id: str) -> str:
        return resolve(config, trial_id).name

    experiment = space.tracking.experiment or space.name
    outbox = sweep_dir / UNLOGGED_FILE
    outbox.unlink(missing_ok=True)  # a count left by an earlier run of this sweep
    sweep_run = SweepRun(uri, experiment, meta["sweep_id"], space.name,
                         sweep_dir.parent / "mlartifacts" if uri.startswith("sqlite:") else None, trial_outbox=outbox)
    sweep_run.start()
    callbacks = [TrialLogger(uri, experiment, meta["sweep_id"], resolve, outbox),
                 Progress(search.n_trials(space), space.trial.train.epochs, name_of, verbose),
                 StateBackup(sweep_dir / "tune-state")]
    ray.init(**ray_init_options(address, dashboard, space))
    # our progress lines and one-line errors replace Tune's messages and tracebacks (which stay
    # in each failed trial's error.txt)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    trainable = tune.with_resources(make_trainable(space), {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    exp_dir = experiment_dir(sweep_dir, meta)
    # Tune's storage_path; "tune" is the experiment's name
    storage_root = shared_storage.join(meta["storage"], meta["name"]) if meta.get("storage") else str(sweep_dir)
    t0 = time.time()
    if resume and repair(exp_dir, callbacks[-1].backup_dir):
        print("note: Tune's experiment state was cut short by the crash; resuming from its last complete copy",
              file=sys.stderr, flush=True)
    # a resumed sweep: Tune restores the callbacks pickled with the experiment; the trial logger
    # finds its runs again by their tags in setup(), the progress and backup callbacks hold no state
    interrupted = _fit(lambda: tune.Tuner.restore(exp_dir, trainable, resume_errored=True)
                       if resume and tune.Tuner.can_restore(exp_dir)
                       else _new_tuner(space, sweep_dir, trainable, storage_root, callbacks, name_of), address)
    return _conclude(space, sweep_dir, uri, sweep_run, exp_dir, time.time() - t0, interrupted)


def _conclude(space, sweep_dir: Path, uri: str, sweep_run, exp_dir: str, wall: float, interrupted: bool) -> int:
    """The reports, the parent run's end, the summary, and the exit code (cmisweep.status.ExitCode)."""
    from cmisweep.reports import write_reports
    from cmisweep.reports.trials import evaluated as evaluated_trials
    from cmisweep.sweep.collect import collect_epochs, collect_models, collect_trials
    from cmisweep.sweep.progress import summary_table

    collect_models(exp_dir, space, sweep_dir / MODELS_DIR)
    from cmisweep.sweep.moasha import with_stop_reasons

    trials = with_stop_reasons(collect_trials(exp_dir, space), sweep_dir)
    frame = write_reports(sweep_dir, space, trials, collect_epochs(exp_dir, space))
    sweep_run.log_reports(sweep_dir / "reports", frame)
    count = (lambda status: int((frame["status"] == status).sum()) if len(frame) else 0)
    failed, stopped, evaluated = count(TrialStatus.FAILED), count(TrialStatus.STOPPED), len(evaluated_trials(frame))
    interrupted = interrupted or count(TrialStatus.UNFINISHED) > 0
    if interrupted:
        sweep_run.finish(RunStatus.KILLED, unfinished_status=RunStatus.KILLED)
    else:
        sweep_run.finish(RunStatus.FAILED if failed else RunStatus.FINISHED, unfinished_status=RunStatus.FAILED)
    unlogged = sweep_run.unlogged()  # what a tracking server that went down has not taken yet
    print(summary_table(frame), flush=True)
    print(f"\nsweep {space.name}: {len(frame)} trials, {evaluated} evaluated, {stopped} stopped early, {failed} failed, "
          f"{wall / 60:.1f} min", flush=True)
    print(f"reports: {sweep_dir / 'reports'}\ntracking: {uri} (open with: cmisweep ui {space.name})", flush=True)
    if unlogged:
        print(f"error: MLflow at {uri} did not take {unlogged} calls (metrics, artifacts, run states) even after "
              f"retrying for a minute: the reports under {sweep_dir} and trials.parquet are complete, MLflow's "
              f"copy is not (`cmisweep report {space.name}` logs the reports to it again)", file=sys.stderr)
        return ExitCode.TRACKING_INCOMPLETE
    if interrupted:
        print(f"interrupted: continue with `cmisweep run {sweep_dir / 'space.yaml'} --resume`", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if len(frame) and not evaluated:
        print(f"error: no trial was evaluated ({stopped} stopped early by the scheduler, {failed} failed): the "
              "reports have no final metrics; set scheduler.evaluate_stopped: true, or raise grace_period",
              file=sys.stderr)
        return ExitCode.NOTHING_EVALUATED
    return ExitCode.FAILED_TRIALS if failed else ExitCode.OK


UNLOGGED_FILE = "tracking-unlogged.json"  # the trial logger's count of MLflow calls still kept (sweep.outbox)
TRIAL_COLUMNS = {"name", "preset", "gamma", "alpha", "seed", "status"}  # what makes a cmisweep trials.parquet


def read_parquet(path: Path, key: str | None, what: str, columns: set[str] = frozenset()):
    """A parquet file that input names: unreadable, or without the columns, is bad input (one line)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input here
        raise ConfigError(path, key, f"not a parquet file of {what} ({type(e).__name__})") from None
    missing = columns - set(frame.columns)
    if missing:
        raise ConfigError(path, key, f"not a cmisweep {path.name} (no column {', '.join(sorted(missing))})")
    return frame


def _other_trials(against: str) -> tuple[Path, object]:
    """(path, trials) of `--against`: a trials.parquet, or a directory that holds one."""
    p = Path(against)
    f = p / "trials.parquet" if p.is_dir() else p
    if not f.is_file():
        raise ConfigError(None, "--against", f"no trials at {f} (expected a sweep directory or its trials.parquet)")
    return f, read_parquet(f, "--against", "trials", TRIAL_COLUMNS - {"name"})


def committed_trials(d: Path):
    """A committed sweep's trials.parquet (and epochs.parquet): what `report` reads without Tune."""
    trials = read_parquet(d / "trials.parquet", None, "trials", TRIAL_COLUMNS)
    epochs = read_parquet(d / "epochs.parquet", None, "epochs") if (d / "epochs.parquet").exists() else None
    return trials, epochs


def report(sweep: str, results_root: str | Path = "results", against: str | None = None,
           presets: list[str] | None = None) -> int:
    """`cmisweep report`: rewrite the reports of a sweep; log them to its parent run. A sweep
    directory with Tune's state (sweep.json, tune/) is read from that state; a committed one
    (space.yaml and trials.parquet, e.g. results/studies/<study>) from its files alone, with no
    tracking. against: another sweep (its directory or trials.parquet) whose front of `presets`
    this sweep's points are compared with (cmisweep.reports.versus)."""
    from cmisweep.analysis import kl_cap
    from cmisweep.regularizer import PRESETS
    from cmisweep.reports import versus, write_reports
    from cmisweep.sweep.collect import collect_epochs, collect_models, collect_trials
    from cmisweep.sweep.progress import summary_table
    from cmisweep.sweep.tracking import SweepRun

    d = find_sweep(sweep, results_root)
    live = (d / "sweep.json").exists()
    if not live and not ((d / "space.yaml").exists() and (d / "trials.parquet").exists()):
        raise ConfigError(None, "SWEEP", f"no sweep at {d} (expected {d / 'sweep.json'}, or a committed sweep's "
                                         "space.yaml and trials.parquet)")
    space = load_space(d / "space.yaml", stored=True)
    known = list(dict.fromkeys([*PRESETS, *space.search.presets]))  # a plug-in preset of this sweep too
    bad = sorted(set(presets or []) - set(known))
    if bad:
        raise ConfigError(None, "--presets", f"unknown preset {', '.join(bad)}; expected some of {', '.join(known)}")
    other = _other_trials(against) if against else None  # checked before anything is written
    if live:
        meta = json.loads((d / "sweep.json").read_text())
        exp_dir = experiment_dir(d, meta)
        from cmisweep.sweep.moasha import with_stop_reasons

        trials, epochs = with_stop_reasons(collect_trials(exp_dir, space), d), collect_epochs(exp_dir, space)
        collect_models(exp_dir, space, d / MODELS_DIR)  # any a sweep's end did not copy (a driver killed there)
        if not len(trials) and (d / "trials.parquet").exists():  # Tune's state is gone: the files remain
            trials, epochs = committed_trials(d)
    else:
        trials, epochs = committed_trials(d)
    frame = write_reports(d, space, trials, epochs)
    print(summary_table(frame))
    print(f"reports: {d / 'reports'}, {d / 'trials.parquet'}, {d / 'frontier.parquet'}")
    if other is not None:
        path, other_trials = other
        name = (path.parent if path.name == "trials.parquet" else path).name
        cap = kl_cap(space.analysis, space.trial.data.dataset)
        print(f"against {name}: {versus.write(frame, other_trials, space.name, name, d / 'reports', presets, cap)}")
    if not live:
        return ExitCode.OK
    sweep_run = SweepRun(meta["tracking_uri"], space.tracking.experiment or space.name, meta["sweep_id"], space.name,
                         None)
    try:
        sweep_run.start(mark_running=False)
        sweep_run.log_reports(d / "reports", frame)
    except Exception as e:  # noqa: BLE001 - the files are written; the store is a copy of them
        print(f"warning: could not log the reports to MLflow ({e})", file=sys.stderr)
    return ExitCode.OK
