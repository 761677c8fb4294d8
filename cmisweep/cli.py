"""The `cmisweep` command line. Errors meant for users print one line and exit non-zero:
2 bad input, 1 a failed run, 3 a sweep that finished with failed trials, 130 interrupted."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from cmisweep.errors import CmisweepError


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def cmd_train(args) -> int:
    from cmisweep import configio
    from cmisweep.config import TrialConfig
    from cmisweep.trial import run_trial

    raw = configio.read_yaml(args.config)
    overrides = list(args.set or [])
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = configio.validate(TrialConfig, configio.apply_overrides(raw, overrides, args.config), args.config)
    out = Path(args.out) if args.out else Path("results") / "train" / cfg.name
    ckpt = out / "checkpoint.pt"
    resume = ckpt if args.resume and ckpt.exists() else None
    if args.resume and resume is None:
        print(f"no checkpoint at {ckpt}; starting from scratch", file=sys.stderr)

    def progress(m: dict, trainer) -> None:
        keys = ("train/loss", "val/objective", "val/elbo", "val/recon", "val/kl_z", "val/c_hat", "val/m_hat")
        shown = "  ".join(f"{k}={_fmt(m[k])}" for k in keys if k in m)
        print(f"epoch {m['epoch']}/{cfg.train.epochs}  {shown}  ({m['time/epoch_s']:.1f} s)", file=sys.stderr, flush=True)

    result = run_trial(cfg, out, on_epoch=progress, resume_from=resume, checkpoint=ckpt)
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    print(f"wrote {out / 'metrics.json'}" + "".join(f", {p}" for p in result.artifacts), file=sys.stderr)
    return 0


def cmd_data_fetch(args) -> int:
    from cmisweep.data.fetch import fetch

    for name in args.datasets:
        print(f"{name}: {fetch(name, args.dest)}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmisweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train and evaluate one trial locally")
    t.add_argument("config", help="a trial config YAML (see search_spaces/ and README)")
    t.add_argument("--out", help="output directory (default results/train/<name>)")
    t.add_argument("--epochs", type=int, help="override train.epochs")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key, e.g. --set regularizer.preset=beta (repeatable; VALUE is YAML)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="data sets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download and verify MNIST / Fashion-MNIST")
    f.add_argument("datasets", nargs="+", choices=["mnist", "fashion-mnist"])
    f.add_argument("--dest", default="data", help="root directory (default ./data)")
    f.set_defaults(func=cmd_data_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CmisweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

