"""MLflow calls that the store did not take, kept in order and replayed: tracking must neither stop
a sweep nor lose its data (docs/design.md section 6).

Each object that writes to MLflow owns one Outbox: the runner's SweepRun and Tune's TrialLogger
callback. Tune restores the callback from its pickled experiment on resume, a copy the runner never
sees, so the callback's outbox tells the runner what it still holds through a small file in the
sweep directory (`count_file`), not through shared memory.
"""
from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

from cmisweep.files import atomic_write_text


class Outbox:
    """Calls `fn(*args)` now, or keeps it (with every later call) until the store answers again.

    The first failure of an outage is reported once on stderr, and its end once. When `count_file`
    is given, the number of kept calls is written there whenever it changes and at `drain`, so another object in the driver can read it (`Outbox.read_count`)."""

    def __init__(self, count_file: str | Path | None = None):
        self.calls: collections.deque = collections.deque()
        self.failures = 0
        self.count_file = Path(count_file) if count_file else None
        self._recorded = 0  # the count count_file holds

    def __len__(self) -> int:
        return len(self.calls)

    def call(self, fn, *args) -> None:
        """Run fn(*args) after any kept calls; keep it if the store does not take it."""
        self.calls.append((fn, args))
        self.flush()

    def flush(self) -> int:
        """Replay the kept calls in order until one fails; returns how many are still kept."""
        while self.calls:
            fn, args = self.calls[0]
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - any store error: keep the call for later
                if not self.failures:
                    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                    print(f"warning: MLflow did not take a call ({type(e).__name__}: {first}); keeping calls to "
                          "replay when it answers", file=sys.stderr, flush=True)
                self.failures += 1
                break
            self.calls.popleft()
            if self.failures and not self.calls:
                print("MLflow answers again: the kept calls were replayed", file=sys.stderr, flush=True)
                self.failures = 0
        if len(self.calls) != self._recorded:  # only in an outage and at its end: no write per call
            self._write_count()
        return len(self.calls)

    def drain(self, wait_s: float = 60.0, every_s: float = 2.0) -> int:
        """Replay, retrying for up to wait_s; the number of calls still kept (also written out)."""
        t0 = time.time()
        while self.flush() and time.time() - t0 < wait_s:
            time.sleep(every_s)
        self._write_count()
        return len(self.calls)

    def _write_count(self) -> None:
        if self.count_file is None:
            return
        try:
            atomic_write_text(self.count_file, json.dumps({"unlogged": len(self.calls)}))
            self._recorded = len(self.calls)
        except OSError as e:  # a sweep directory gone read-only must not stop the trials
            print(f"warning: cannot record the unlogged MLflow calls in {self.count_file} ({e})", file=sys.stderr)

    @staticmethod
    def read_count(count_file: str | Path) -> int:
        """What another object's outbox last recorded it still holds (0 when it never wrote)."""
        try:
            return int(json.loads(Path(count_file).read_text())["unlogged"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
