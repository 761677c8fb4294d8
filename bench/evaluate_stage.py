"""Training and evaluation as two stages against the all-in-one sweep (docs/design.md section 6.1).

    .venv/bin/python bench/evaluate_stage.py [--space search_spaces/quickstart.yaml] [--set KEY=VALUE ...]
                                             [--defer ihat,mcas] [--trials claims] [--out DIR]

Runs the space twice through the CLI, as a user would: once as it is (every metric at each trial's
end), once with `trial.evaluation.defer` and then `cmisweep evaluate --metrics <deferred> --trials
<selection>`. Prints the wall time of each (sweep, evaluate, both) and their ratio, and checks that
every metric the staged run evaluated equals the all-in-one sweep's (exit 1 if one differs).
--set applies to both runs (e.g. trial.data.train_size=10000 for the image study's trial size).
Needs Fashion-MNIST ($CMISWEEP_DATA or ./data).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def cmisweep(*args, cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cmisweep", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        sys.exit(f"cmisweep {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "quickstart.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--defer", default="ihat,mcas")
    ap.add_argument("--trials", default="claims")
    ap.add_argument("--out", help="keep the sweeps here (default: a temporary directory)")
    args = ap.parse_args()
    space = yaml.safe_load(Path(args.space).read_text())
    out = Path(args.out or tempfile.mkdtemp(prefix="cmisweep-bench-stage-"))
    out.mkdir(parents=True, exist_ok=True)
    defer = args.defer.split(",")
    paths = {}
    for tag, deferred in (("all", []), ("staged", defer)):
        s = {**space, "name": f"{space['name']}-{tag}"}
        s["trial"] = {**s["trial"], "evaluation": {**s["trial"].get("evaluation", {}), "defer": deferred}}
        paths[tag] = out / f"{tag}.yaml"
        paths[tag].write_text(yaml.safe_dump(s))
    sets = [x for kv in args.set for x in ("--set", kv)]
    t_all = cmisweep("run", paths["all"], "--results", out / "results", *sets, cwd=out)
    t_train = cmisweep("run", paths["staged"], "--results", out / "results", *sets, cwd=out)
    t_eval = cmisweep("evaluate", f"{space['name']}-staged", "--metrics", args.defer, "--trials", args.trials,
                      "--results", out / "results", cwd=out)
    a = pd.read_parquet(out / "results" / f"{space['name']}-all" / "trials.parquet").set_index("name")
    b = pd.read_parquet(out / "results" / f"{space['name']}-staged" / "trials.parquet").set_index("name")
    history = pd.read_parquet(out / "results" / f"{space['name']}-staged" / "evaluations.parquet")
    columns = sorted(c for c in set(history["column"]) if "/time/" not in c)
    differ = [(n, c, a.loc[n, c], b.loc[n, c]) for n in set(history["name"]) for c in columns
              if not (pd.isna(a.loc[n, c]) and pd.isna(b.loc[n, c])) and a.loc[n, c] != b.loc[n, c]]
    cpu = a["cpu_model"].dropna().iloc[0] if "cpu_model" in a and a["cpu_model"].notna().any() else "?"
    print(f"space {space['name']} ({len(a)} trials; {' '.join(args.set) or 'as written'}) on {cpu}")
    print(f"all-in-one sweep:            {t_all:7.1f} s")
    print(f"sweep deferring {args.defer:<12} {t_train:7.1f} s  ({t_train / t_all:.2f}x)")
    print(f"evaluate --trials {args.trials:<10} {t_eval:7.1f} s  ({history['name'].nunique()} trials)")
    print(f"both stages:                 {t_train + t_eval:7.1f} s  ({(t_train + t_eval) / t_all:.2f}x the all-in-one)")
    print(f"evaluated metrics identical: {not differ} ({len(columns)} columns x {history['name'].nunique()} trials)")
    for row in differ[:10]:
        print("  differs:", row)
    print(f"sweeps kept under {out}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
