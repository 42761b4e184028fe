"""A dispatcher process: one worker per endpoint, the stream's trimming, metrics.

`dockyard notifications` runs one; `dockyard serve` runs one under the
supervisor when endpoints are configured. Any number may run against the same
Redis (`services.notifications`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import redis

from services.notifications.metrics import DispatcherMetrics
from services.notifications.queue import EndpointQueue, trim
from services.notifications.worker import EndpointWorker
from shared.notify_config import redacted_url
from shared.redis_client import connect, from_section

log = logging.getLogger("dockyard.notifications")

TRIM_EVERY = 5.0


def redis_client(section: dict[str, Any]) -> redis.Redis:
    """The index's Redis (``index.redis``: a URL, or the primary behind Sentinel)."""
    # Reads block for READ_BLOCK_MS; the socket timeout must outlast them.
    return connect(from_section(section), socket_timeout=10, socket_connect_timeout=2,
                   health_check_interval=10, max_connections=64)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def probe(endpoint: dict[str, Any]) -> None:
    """Say at startup when an endpoint cannot be reached; its events wait meanwhile."""
    parts = urlsplit(endpoint["url"])
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=endpoint["timeout"]).close()
    except OSError as e:
        log.warning("endpoint %s (%s) is not reachable now: %s; its events stay queued "
                    "and are retried", endpoint["name"], redacted_url(endpoint["url"]),
                    e.strerror or type(e).__name__)


class Dispatcher:
    def __init__(self, config: dict[str, Any], consumer: str,
                 metrics: DispatcherMetrics | None = None) -> None:
        cfg = config["notifications"]
        self.endpoints = cfg["endpoints"]
        self.prefix = config["index"]["redis"]["key_prefix"]
        self.client = redis_client(config["index"]["redis"])
        self.metrics = metrics or DispatcherMetrics()
        self.stop = threading.Event()
        self.queues = [EndpointQueue(self.client, self.prefix, e["name"], consumer)
                       for e in self.endpoints]
        self.workers = [EndpointWorker(e, q, cfg["claim_idle"], self.metrics, self.stop)
                        for e, q in zip(self.endpoints, self.queues, strict=True)]
        self.metrics.watch(self.queues)

    def start(self) -> list[threading.Thread]:
        for e in self.endpoints:
            threading.Thread(target=probe, args=(e,), daemon=True).start()
        threads = [w.start() for w in self.workers]
        threads.append(threading.Thread(target=self._trim_loop, name="notify-trim",
                                        daemon=True))
        threads[-1].start()
        log.info("delivering to %d endpoints: %s", len(self.endpoints),
                 ", ".join(f"{e['name']} ({redacted_url(e['url'])})" for e in self.endpoints))
        return threads

    def _trim_loop(self) -> None:
        names = [e["name"] for e in self.endpoints]
        while not self.stop.wait(TRIM_EVERY):
            try:
                removed = trim(self.client, self.prefix, names)
                if removed:
                    log.debug("trimmed %d delivered events from the stream", removed)
            except redis.exceptions.RedisError as e:
                log.debug("trim skipped: %s", e)

    def run_forever(self) -> int:
        def on_signal(signum: int, frame: Any) -> None:
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        threads = self.start()
        self.stop.wait()
        log.info("stopping; events in flight stay queued")
        for t in threads:
            # A worker ends after its POST in flight, bounded by the endpoint's timeout.
            t.join(timeout=max((e["timeout"] for e in self.endpoints), default=1) + 1)
        return 0
