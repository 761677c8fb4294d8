"""The `cmisweep` command line. Errors meant for users print one line and exit non-zero
(cmisweep.status.ExitCode: 2 bad input, 1 a failed run, 3 a sweep with failed trials, 4 nothing
evaluated, 5 a tracking server that did not take all of the sweep, 130 interrupted)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from cmisweep.errors import CmisweepError
from cmisweep.status import ExitCode
from cmisweep.vocabulary import IMAGE_SETS


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


class _UsageError(Exception):
    """An argument argparse refused; main() prints it as one line (argparse prints usage + error)."""

    def __init__(self, prog: str, message: str):
        self.prog, self.message = prog, message
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own: usage on stderr and SystemExit(2)
        raise _UsageError(self.prog, message)


def _int_in(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]; refused with what was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _writable(path: str | Path, arg: str, suffixes: tuple[str, ...] = (), directory: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work: the nearest existing
    directory above it must take a new file (probed with an unnamed temporary file, which also
    catches a read-only filesystem and /proc, where root's os.access says yes)."""
    import os
    import tempfile

    from cmisweep.errors import ConfigError

    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(None, arg, f"{path}: expected a {' or '.join(suffixes)} file name")
    if not directory and path.is_dir():
        raise ConfigError(None, arg, f"{path} is a directory; expected a file name")
    if directory and path.exists() and not path.is_dir():
        raise ConfigError(None, arg, f"{path} is a file; expected a directory")
    parent = path if directory and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(None, arg, f"cannot write {path}: {parent} is not a directory")
    try:
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"permission denied in {parent}")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(None, arg, f"cannot write {path}: {parent} is not writable "
                                     f"({e.strerror or e})") from None
    return path


def _existing_file(path: str, arg: str) -> Path:
    from cmisweep.errors import ConfigError

    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(None, arg, f"{p}: no such file")
    if not p.is_file():
        raise ConfigError(None, arg, f"{p} is not a file")
    return p


def _modality_of(run: str, cfg, needed: str, command: str, other: str) -> None:
    from cmisweep.errors import DataError

    if cfg.data.modality != needed:
        raise DataError(f"{run}: {command} is for {needed} models; this is a {cfg.model.kind} on "
                        f"{cfg.data.dataset} (use cmisweep {other})")


def cmd_train(args) -> int:
    from cmisweep import configio
    from cmisweep.config import TrialConfig
    from cmisweep.trial import run_trial

    raw = configio.read_yaml(args.config)
    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = configio.validate(TrialConfig, configio.apply_overrides(raw, overrides, args.config), args.config)
    from cmisweep.sweep.tracking import check_uri, log_train_run
    from cmisweep.tracking_uri import tracking_uri

    results = Path(args.results)
    store = tracking_uri(args.tracking_uri, None, results)
    check_uri(*store)
    uri = store.uri
    out = _writable(args.out or results / "train" / cfg.name, "--out" if args.out else "--results", directory=True)
    ckpt = out / "checkpoint.pt"
    resume = ckpt if args.resume and ckpt.exists() else None
    if args.resume and resume is None:
        print(f"no checkpoint at {ckpt}; starting from scratch", file=sys.stderr)
    if resume is not None:
        from cmisweep.training import read_checkpoint

        read_checkpoint(resume)  # a damaged one is refused before the data load, and left as it is

    def progress(m: dict, trainer) -> None:
        keys = ("train/loss", "val/objective", "val/elbo", "val/recon", "val/kl_z", "val/c_hat", "val/m_hat")
        shown = "  ".join(f"{k}={_fmt(m[k])}" for k in keys if k in m)
        print(f"epoch {m['epoch']}/{cfg.train.epochs}  {shown}  ({m['time/epoch_s']:.1f} s)", file=sys.stderr, flush=True)

    result = run_trial(cfg, out, on_epoch=progress, resume_from=resume, checkpoint=ckpt)
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    print(f"wrote {out / 'metrics.json'}" + "".join(f", {p}" for p in result.artifacts), file=sys.stderr)
    run_id = log_train_run(uri, args.experiment, cfg, result.metrics, result.history, out,
                           results / "mlartifacts" if uri.startswith("sqlite:") else None)
    print(f"MLflow run {run_id} (experiment {args.experiment}, {uri})", file=sys.stderr)
    print(f"load it: cmisweep sample {run_id} --out grid.png  |  python -c \"import cmisweep; "
          f"cmisweep.load('{run_id}')\"", file=sys.stderr)
    return ExitCode.OK


def cmd_sample(args) -> int:
    from cmisweep.generation import sample_grid
    from cmisweep.saved import load

    out = _writable(args.out, "--out")
    if args.data is not None and not Path(args.data).is_dir():
        from cmisweep.errors import ConfigError

        raise ConfigError(None, "--data", f"{args.data}: no such directory")
    model, cfg = load(args.run, args.tracking_uri)
    _modality_of(args.run, cfg, "image", "sample", "convert")
    out = sample_grid(model, cfg, out, n=args.n, seed=args.seed, data_path=args.data)
    print(f"wrote {out}: {cfg.data.dataset} test images, each followed by {args.n} samples from its z")
    return ExitCode.OK


def cmd_convert(args) -> int:
    from cmisweep.generation import convert
    from cmisweep.saved import load

    source, target = _existing_file(args.source, "SOURCE"), _existing_file(args.target, "TARGET")
    out = _writable(args.out, "--out", suffixes=(".wav",))
    model, cfg = load(args.run, args.tracking_uri)
    _modality_of(args.run, cfg, "speech", "convert", "sample")
    wav, png = convert(model, cfg, source, target, out, n_iter=args.iterations)
    print(f"wrote {wav} (the voice of {args.source} saying {args.target}) and {png}")
    return ExitCode.OK


def cmd_data_fetch(args) -> int:
    from cmisweep.data.fetch import fetch
    from cmisweep.data.images import locate

    _writable(args.dest, "--dest", directory=True)
    for name in args.datasets:
        if args.if_missing:
            try:
                print(f"{name}: found at {locate(name)}", flush=True)
                continue
            except CmisweepError:
                pass
        print(f"{name}: {fetch(name, args.dest)}", flush=True)
    return ExitCode.OK


def cmd_run(args) -> int:
    from cmisweep.sweep import runner

    if args.dry_run:
        from cmisweep.sweep.plan import plan

        space = runner.check(args.space, address=args.address, tracking_uri=args.tracking_uri,
                             results_root=args.results, overrides=args.set or [], storage=args.storage)
        print(plan(space, measure=not args.no_measure))
        return ExitCode.OK
    return runner.run(args.space, resume=args.resume, address=args.address, tracking_uri=args.tracking_uri,
                      results_root=args.results, dashboard=args.dashboard, verbose=not args.quiet,
                      overrides=args.set or [], storage=args.storage)


def cmd_report(args) -> int:
    from cmisweep.sweep.runner import report

    return report(args.sweep, results_root=args.results, against=args.against, presets=args.presets)


def cmd_combine(args) -> int:
    from cmisweep.sweep.combine import combine

    return combine(args.space, args.blocks, args.into, args.set or [])


def cmd_evaluate(args) -> int:
    from cmisweep.sweep.evaluate import run
    from cmisweep.sweep.runner import find_sweep

    return run(find_sweep(args.sweep, args.results), args.metrics, args.trials or ["all"], args.set or [],
               address=args.address)


def cmd_ui(args) -> int:
    from cmisweep.sweep.ui import experiment_of, serve, tracking_uri_for

    uri = tracking_uri_for(args.sweep, Path(args.results), args.tracking_uri)
    return serve(uri, args.host, args.port, experiment_of(args.sweep, Path(args.results)))


def cmd_cluster_check(args) -> int:
    from cmisweep.sweep.cluster import check

    config = check(args.file)
    print(f"{args.file}: valid Ray cluster config ({config['cluster_name']}, provider {config['provider']['type']})")
    return ExitCode.OK


def cmd_cluster_rehearse(args) -> int:
    from cmisweep.sweep import runner
    from cmisweep.sweep.cluster import check
    from cmisweep.sweep.local_cluster import LocalCluster

    check(args.config)
    with LocalCluster(args.config) as cluster:
        print(f"local cluster up at {cluster.address} (head: no CPU for trials; GPU workers on demand)", flush=True)
        code = runner.run(args.space, address=cluster.address, results_root=args.results, overrides=args.set or [],
                          resume=args.resume, tracking_uri=args.tracking_uri, storage=args.storage)
    print("local cluster stopped", flush=True)
    return code


def cmd_synth_speech(args) -> int:
    import time

    from cmisweep.data.speech.synth import synth_corpus

    _writable(args.out, "--out", directory=True)
    t0 = time.perf_counter()
    out = synth_corpus(Path(args.out), speakers=args.speakers, utterances=args.utterances, seed=args.seed,
                       test_fraction=args.test_fraction, workers=args.workers)
    print(f"{out}: {args.speakers} speakers x {args.utterances} utterances in {time.perf_counter() - t0:.0f} s")
    return ExitCode.OK


def _model_args(p: argparse.ArgumentParser) -> None:
    """The model a command reads: a run id (a sweep trial's or cmisweep train's) or a directory."""
    p.add_argument("run", help="an MLflow run id (a sweep trial's or cmisweep train's), runs:/ URI or model directory")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else results/)")


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train and evaluate one trial locally")
    t.add_argument("config", help="a trial config YAML (see search_spaces/ and README)")
    t.add_argument("--out", help="output directory (default results/train/<name>)")
    t.add_argument("--epochs", type=_int_in(0), help="override train.epochs")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key, e.g. --set regularizer.preset=beta (repeatable; VALUE is YAML)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    t.add_argument("--results", default="results", help="results root: the MLflow store (default ./results)")
    t.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under "
                                          "--results)")
    t.add_argument("--experiment", default="train", help="MLflow experiment of the run (default: train)")
    t.set_defaults(func=cmd_train)


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="run a sweep (Ray Tune + MLflow) from a search space")
    r.add_argument("space", help="a search space YAML (search_spaces/*.yaml)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    r.add_argument("--dry-run", action="store_true", help="print the plan and its cost here; start nothing")
    r.add_argument("--no-measure", action="store_true", help="with --dry-run: skip the timing of training steps")
    r.add_argument("--address", help="a Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: the space's, else $MLFLOW_TRACKING_URI, "
                                          "else sqlite under results/)")
    r.add_argument("--results", default="results", help="results root (default ./results)")
    r.add_argument("--storage", help="storage for trial checkpoints shared by all nodes of a cluster "
                                     "(e.g. s3://bucket/prefix; default: results/<name>/tune, or $CMISWEEP_STORAGE)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the space (repeatable)")
    r.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (on 127.0.0.1)")
    r.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    r.set_defaults(func=cmd_run)


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="write a sweep's reports (parquet, plots, tables) again")
    rep.add_argument("sweep", help="the sweep's name under results/, or its directory")
    rep.add_argument("--results", default="results")
    rep.add_argument("--against", metavar="SWEEP_OR_PARQUET",
                     help="also compare this sweep's points with another sweep's front (its directory or "
                          "trials.parquet): reports/versus_<name>.md, .csv and plots")
    rep.add_argument("--presets", nargs="+", metavar="PRESET",
                     help="with --against: the other sweep's presets that make its front (default: this sweep's)")
    rep.set_defaults(func=cmd_report)


def _add_combine(sub) -> None:
    cb = sub.add_parser("combine", help="read sweeps run in sittings (seed blocks, arms) as the one sweep of a grid "
                                        "space, and write its reports")
    cb.add_argument("space", help="the search space of the whole design (a grid)")
    cb.add_argument("blocks", nargs="+", metavar="BLOCK", help="the blocks' sweep directories")
    cb.add_argument("--into", required=True, metavar="DIR", help="the combined sweep's directory")
    cb.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the space, e.g. 'search.seeds=[0, 1, 2, 3]' (repeatable)")
    cb.set_defaults(func=cmd_combine)


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a sweep's kept models again, or the metrics it deferred "
                                         "(evaluation.defer), without training")
    ev.add_argument("sweep", help="the sweep's name under results/, or its directory (a committed study too)")
    ev.add_argument("--metrics", required=True, help="comma-separated metric groups: ihat, probes, mcas (images); "
                                                     "ihat, eer, vc_mcas, vc_speaker (speech)")
    ev.add_argument("--trials", nargs="+", metavar="SELECTION",
                    help="all (default); claims (every trial of the cells the claims pair); front (the points on a "
                         "front: for exploring, never feeds a claim); or trial names")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override an evaluation setting, e.g. evaluation.ihat.steps=2000 (repeatable)")
    ev.add_argument("--results", default="results")
    ev.add_argument("--address", help="Ray cluster address (default: a local Ray of its own)")
    ev.set_defaults(func=cmd_evaluate)


def _add_ui(sub) -> None:
    u = sub.add_parser("ui", help="start the MLflow UI for a sweep's tracking store")
    u.add_argument("sweep", nargs="?", help="a sweep name (default: the shared store under results/)")
    u.add_argument("--results", default="results")
    u.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sweep's, else $MLFLOW_TRACKING_URI, "
                                          "else sqlite under results/)")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=_int_in(1, 65535), default=5000)
    u.set_defaults(func=cmd_ui)


def _add_sample(sub) -> None:
    sa = sub.add_parser("sample", help="a trained image model's samples: test images, each followed by "
                                       "samples from its z (the paper's Fig. 4)")
    _model_args(sa)
    sa.add_argument("--n", type=_int_in(1, 100), default=10, help="samples per image, 1 to 100 (default 10)")
    sa.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    sa.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    sa.add_argument("--data", help="the data directory (default: the model's config, $CMISWEEP_DATA)")
    sa.set_defaults(func=cmd_sample)


def _add_convert(sub) -> None:
    cv = sub.add_parser("convert", help="voice conversion with a trained speech model: SOURCE's voice "
                                        "(z) saying TARGET's content (s)")
    _model_args(cv)
    cv.add_argument("source", help="wav whose speaker (z) is kept")
    cv.add_argument("target", help="wav whose content (s) is kept; the output has its length")
    cv.add_argument("--out", default="converted.wav", help="output wav; a PNG of the spectrograms beside it")
    cv.add_argument("--iterations", type=_int_in(1, 1000), default=32, help="Griffin-Lim iterations, 1 to 1000 (default 32)")
    cv.set_defaults(func=cmd_convert)


def _add_cluster(sub) -> None:
    c = sub.add_parser("cluster", help="Ray cluster configs")
    csub = c.add_subparsers(dest="cluster_command", required=True)
    cc = csub.add_parser("check", help="validate a cluster YAML against Ray's schema")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_cluster_check)
    cr = csub.add_parser("rehearse", help="run a sweep on a multi-node Ray cluster simulated on this machine "
                                          "(cluster/local.yaml), then stop it: a cluster run before paying for one")
    cr.add_argument("config", help="a fake_multinode cluster config (cluster/local.yaml)")
    cr.add_argument("space", help="a search space YAML")
    cr.add_argument("--results", default="results")
    cr.add_argument("--resume", action="store_true")
    cr.add_argument("--tracking-uri", help="MLflow tracking URI (e.g. an mlflow server's http://host:port)")
    cr.add_argument("--storage", help="shared storage for trial checkpoints (default $CMISWEEP_STORAGE)")
    cr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the space (repeatable)")
    cr.set_defaults(func=cmd_cluster_rehearse)


def _add_data(sub) -> None:
    d = sub.add_parser("data", help="data sets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download and verify MNIST / Fashion-MNIST")
    f.add_argument("datasets", nargs="+", choices=IMAGE_SETS)
    f.add_argument("--dest", default="data", help="root directory (default ./data)")
    f.add_argument("--if-missing", action="store_true",
                   help="skip a data set already found ($CMISWEEP_DATA, ./data, Debian's dir)")
    f.set_defaults(func=cmd_data_fetch)
    sp = dsub.add_parser("synth-speech", help="synthesize the open multi-speaker corpus with espeak-ng")
    sp.add_argument("--out", default="data/speech-synth", help="corpus directory (default ./data/speech-synth)")
    sp.add_argument("--speakers", type=_int_in(1), default=120)
    sp.add_argument("--utterances", type=_int_in(1), default=10, help="utterances per speaker")
    sp.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    sp.add_argument("--test-fraction", type=_fraction, default=0.25, help="share of speakers held out for test")
    sp.add_argument("--workers", type=_int_in(1, 64), default=2, help="espeak-ng processes at a time")
    sp.set_defaults(func=cmd_synth_speech)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cmisweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_run, _add_report, _add_combine, _add_evaluate, _add_ui, _add_sample, _add_convert, _add_cluster, _add_data):
        add(sub)
    return p

def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:  # one line, as every other bad input: the argument and what was expected
        print(f"error: {e.message} (see {e.prog} --help)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        return args.func(args)
    except CmisweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED

