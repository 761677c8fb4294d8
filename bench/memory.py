"""Peak memory of a 2-trial quickstart sweep, all its processes together (the driver, Ray's
services and the trial workers).

    .venv/bin/python bench/memory.py

Runs `cmisweep run search_spaces/quickstart.yaml` restricted to one gamma (beta and cmi, 2 trials
at once) in a fresh process session and samples every process of that session 4 times a second:
RSS (counts shared pages once per process: an upper bound) and PSS (shares them out: the honest
total). Prints the peaks and the processes at the RSS peak.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def session_processes(sid: int) -> dict[int, tuple[str, int, int]]:
    """pid -> (name, rss bytes, pss bytes) for every process of session sid."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if int((p / "stat").read_text().rsplit(")", 1)[1].split()[3]) != sid:
                continue
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = dict(ln.split(":", 1) for ln in (p / "smaps_rollup").read_text().splitlines()[1:])
            rss, pss = (int(fields[k].split()[0]) * 1024 for k in ("Rss", "Pss"))
        except (OSError, ValueError, IndexError, KeyError):
            continue
        out[int(p.name)] = (cmd.split(" ")[0].rsplit("/", 1)[-1][:40] if not cmd.startswith("ray::") else cmd[:40],
                            rss, pss)
    return out


def main() -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "cmisweep", "run", str(ROOT / "search_spaces" / "quickstart.yaml"),
                                 "--set", "search.gamma=[0.3]", "--results", str(Path(tmp) / "results"), "--quiet"],
                                cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, text=True)
        peak_rss = peak_pss = 0
        at_peak: dict = {}
        t0 = time.time()
        while proc.poll() is None:
            procs = session_processes(proc.pid)
            rss = sum(r for _, r, _ in procs.values())
            pss = sum(p for _, _, p in procs.values())
            if rss > peak_rss:
                peak_rss, at_peak = rss, procs
            peak_pss = max(peak_pss, pss)
            time.sleep(0.25)
        err = proc.stderr.read()
        if proc.returncode != 0:
            sys.exit(f"sweep failed ({proc.returncode}):\n{err[-3000:]}")
    gib = 1024**3
    print(f"2-trial quickstart sweep, {time.time() - t0:.0f} s: peak total RSS {peak_rss / gib:.2f} GiB, "
          f"peak total PSS {peak_pss / gib:.2f} GiB")
    print("processes at the RSS peak (RSS MiB):")
    for name, rss, _ in sorted(at_peak.values(), key=lambda v: -v[1]):
        print(f"  {rss / 2**20:7.0f}  {name}")


if __name__ == "__main__":
    main()
