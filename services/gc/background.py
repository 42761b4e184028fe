"""Collections on an interval, run by the storage processes, with their metrics.

Every storage process runs the loop; the collector's run lock (`fences`)
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

import logging
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from services.gc import runtime
from services.gc.report import KINDS, load_summary
from services.storage.paths import Layout
from shared.observability import Metrics

log = logging.getLogger("dockyard.gc")
# How often a waiting process looks again at when the last run finished.
POLL = 60.0


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
        started = time.monotonic()
        try:
            collector = runtime.collector(self._config)
            report = collector.run()
        except Exception:
            self.runs.labels("error").inc()
            log.exception("garbage collection failed")
            return
        if report is None:
            self.runs.labels("busy").inc()
            return
        runtime.record(collector, report)
        self.runs.labels("ok").inc()
        self.duration.set(time.monotonic() - started)
        self.reclaimed.inc(report.bytes)
        for kind in KINDS:
            self.deleted.labels(kind).inc(report.count(kind))
        log.info("garbage collection: %s", report.summary())

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
