"""Collections on an interval, run by the storage processes, with their metrics.

Every storage process runs the loop, each collection in a `dockyard gc` child
process at a lower CPU priority; the collector's run lock (`fences`)
lets one collection at a time run per storage root, and a process starts
one only when the last run on the root (by any process, or `dockyard gc`)
finished `gc.interval` seconds ago, so N storage processes still collect
about once per interval.

Metrics, in the storage process's registry:

- ``dockyard_gc_runs_total{result}``: ``ok``, ``error``, or ``busy`` (another
  collection held the root);
- ``dockyard_gc_last_duration_seconds``;
- ``dockyard_gc_reclaimed_bytes_total`` and ``dockyard_gc_deleted_total{kind}``;
- ``dockyard_gc_last_success_timestamp_seconds``: of the last successful run on
  the root by anyone, read from the run summary the collector leaves in
  ``gc/last-run.json``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from services.gc.report import load_summary
from services.storage.paths import Layout
from shared import config as config_mod
from shared.observability import Metrics

log = logging.getLogger("dockyard.gc")
# How often a waiting process looks again at when the last run finished.
POLL = 60.0
NICE = 10
TIMEOUT = 6 * 3600
BUSY = "another collection is running"


class Background:
    def __init__(self, config: dict[str, Any], metrics: Metrics) -> None:
        self._config = config
        self._interval = float(config["gc"]["interval"])
        self._layout = Layout(config["storage"]["root"])
        registry = metrics.registry
        self.runs = Counter("dockyard_gc_runs_total", "Garbage collections started",
                            ["result"], registry=registry)
        self.duration = Gauge("dockyard_gc_last_duration_seconds",
                              "Duration of this process's last garbage collection",
                              registry=registry)
        self.reclaimed = Counter("dockyard_gc_reclaimed_bytes_total",
                                 "Bytes of blobs and uploads garbage collection deleted",
                                 registry=registry)
        self.deleted = Counter("dockyard_gc_deleted_total",
                               "Objects garbage collection deleted", ["kind"],
                               registry=registry)
        last = Gauge("dockyard_gc_last_success_timestamp_seconds",
                     "When the last successful collection on this storage root finished",
                     registry=registry)
        last.set_function(self.last_success)

    def last_success(self) -> float:
        summary = load_summary(self._layout.gc_file("last-run.json"))
        return float(summary.get("finished", 0.0)) if summary else 0.0  # type: ignore[arg-type]

    def run_once(self) -> None:
        """One collection in a child process: `dockyard gc` at a lower CPU priority,
        so that the collector's CPU (and its memory) never competes with this
        process's request threads for the GIL."""
        started = time.monotonic()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="dockyard-gc-") as f:
            f.write(config_mod.dump(self._config, reveal_secrets=True))
            f.flush()
            try:
                out = subprocess.run(
                    [sys.executable, "-m", "services.cli", "gc", "--config", f.name, "--json",
                     "--no-wait", "--nice", str(NICE)],
                    capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                    # The file is the effective configuration already: the
                    # environment must not override it a second time.
                    env={k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")})
            except subprocess.TimeoutExpired:
                out = None
        if out is not None and out.returncode == 0:
            report = json.loads(out.stdout)
        elif out is not None and BUSY in out.stderr:
            self.runs.labels("busy").inc()
            return
        else:
            self.runs.labels("error").inc()
            log.error("garbage collection failed: %s",
                      out.stderr.strip()[-2000:] if out is not None else "timed out")
            return
        self.runs.labels("ok").inc()
        self.duration.set(time.monotonic() - started)
        self.reclaimed.inc(report["bytes"])
        for kind, count in report["counts"].items():
            self.deleted.labels(kind).inc(count)
        log.info("garbage collection: %s", {k: v for k, v in report.items() if k != "items"})

    def start(self) -> threading.Thread:
        def loop() -> None:
            # A run is due an interval after the root's last successful one, and
            # never sooner than an interval after this process started or last tried.
            tried = time.time()
            while True:
                delay = max(self.last_success(), tried) + self._interval - time.time()
                if delay > 0:
                    time.sleep(min(delay, POLL))
                    continue
                tried = time.time()
                self.run_once()

        thread = threading.Thread(target=loop, name="gc", daemon=True)
        thread.start()
        return thread
