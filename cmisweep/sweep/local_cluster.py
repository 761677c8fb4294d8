"""A multi-node Ray cluster on this machine, from Ray's fake multi-node provider (cluster/local.yaml):
`cmisweep cluster rehearse` runs a sweep on it the way a sweep runs on cluster/gpu.yaml.

The head is `RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config=...` in a process
group of its own; its autoscaler starts worker nodes as local processes when trials wait. Its Ray
temp dir is its own (under its workdir), so the address file `ray start` writes does not replace
the machine's (/tmp/ray/ray_current_cluster, which a user's plain `ray.init()` follows). It is
stopped by its process group and the PIDs of its session (`ray stop` would kill every Ray on the
machine, other sweeps' included).
"""
from __future__ import annotations

import os

import psutil
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cmisweep.errors import CmisweepError

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, config: str | Path, port: int | None = None, workdir: str | Path | None = None):
        self.config, self.port = Path(config), port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cmisweep-cluster-"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "LocalCluster":
        cfg = yaml.safe_load(self.config.read_text())
        cfg["provider"]["gcs_address"] = self.address
        resolved = self.workdir / "cluster.yaml"
        resolved.write_text(yaml.safe_dump(cfg))
        ray = Path(sys.executable).parent / "ray"
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
               "RAY_USAGE_STATS_ENABLED": "0"}
        self.log = self.workdir / "head.log"
        self.proc = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--num-cpus=0", "--object-store-memory=200000000", "--include-dashboard=false",
             "--disable-usage-stats", f"--autoscaling-config={resolved}", f"--temp-dir={self.workdir / 'ray'}"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise CmisweepError(f"the local cluster's head exited ({self.proc.returncode}); see {self.log}")
            if "Ray runtime started" in self.log.read_text():
                return self
            time.sleep(0.5)
        self.stop()
        raise CmisweepError(f"the local cluster's head did not start in {timeout:.0f} s; see {self.log}")

    def session_pids(self) -> list[int]:
        """Every process of this cluster: the head's process group and the processes that name
        its session directory (worker nodes' raylets and their workers)."""
        text = self.log.read_text() if self.log.exists() else ""
        session = next((w for w in text.split() if "/session_" in w and "/logs" in w), "")
        session = session.split("/logs")[0].rsplit("/", 1)[-1] if session else None
        out = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if self.proc is not None and os.getpgid(proc.pid) == self.proc.pid:
                    out.append(proc.pid)
                elif session and session in " ".join(proc.info["cmdline"] or ()):
                    out.append(proc.pid)
            except (psutil.Error, OSError):
                pass  # gone meanwhile, or not ours to read
        return out

    def stop(self, grace_s: float = 10) -> None:
        if self.proc is None:
            return
        pids = self.session_pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            t0 = time.time()
            while time.time() - t0 < grace_s and any(alive(p) for p in pids):
                time.sleep(0.3)
        self.proc.wait(timeout=10)
        self.proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
