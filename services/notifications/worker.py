"""One endpoint's delivery loop, a thread of its own in each dispatcher process.

Each turn takes one batch (at most ``batch_size`` events) from the endpoint's
consumer group, in this order of preference: what this consumer name took
before a restart, what another dispatcher left idle for ``claim_idle``
seconds, then new events. The batch is POSTed as one envelope until the
endpoint answers 2xx; between failures the wait doubles from
``backoff_initial`` to ``backoff_max``. After a failure, events older than
``max_age`` go to the endpoint's dead letters (and are logged at ERROR); the
rest are tried again. While it waits, the worker keeps its entries' idle time
low so that no other dispatcher takes them over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from services.notifications import delivery
from services.notifications.metrics import DispatcherMetrics
from services.notifications.queue import EndpointQueue, Entry
from shared.notify_config import matches
from shared.user_events import envelope

log = logging.getLogger("dockyard.notifications")

READ_BLOCK_MS = 1000
REDIS_RETRY_MAX = 5.0


def wanted(endpoint: dict[str, Any], entry: Entry) -> bool:
    if entry.only and entry.only != endpoint["name"]:
        return False
    try:
        event = json.loads(entry.event)
    except ValueError:
        log.error("event %s is not JSON; skipped", entry.id)
        return False
    return matches(endpoint, event)


class EndpointWorker:
    def __init__(self, endpoint: dict[str, Any], queue: EndpointQueue, claim_idle: float,
                 metrics: DispatcherMetrics, stop: threading.Event) -> None:
        self.endpoint = endpoint
        self.name = endpoint["name"]
        self.queue = queue
        self._claim_idle = claim_idle
        self._metrics = metrics
        self._stop = stop
        self._own_checked = False
        self._next_claim = 0.0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"notify-{self.name}", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        wait = 0.1
        while not self._stop.is_set():
            try:
                self.queue.groups.ensure()
                batch = self._next_batch()
                if batch:
                    self._handle(batch)
                wait = 0.1
            except redis.exceptions.RedisError as e:
                log.warning("endpoint %s: redis unavailable (%s); retrying in %.1fs",
                            self.name, e, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, REDIS_RETRY_MAX)
            except Exception:
                # A bug must not end this endpoint's deliveries for good: its events
                # stay pending, and are taken up again after the wait.
                log.exception("endpoint %s: unexpected error; retrying in %.1fs", self.name,
                              wait)
                self._own_checked = False
                self._stop.wait(wait)
                wait = min(wait * 2, REDIS_RETRY_MAX)

    def _next_batch(self) -> list[Entry]:
        size = self.endpoint["batch_size"]
        if not self._own_checked:
            own = self.queue.own_pending(size)
            if own:
                log.info("endpoint %s: resuming %d events this consumer had taken",
                         self.name, len(own))
                return own
            self._own_checked = True
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_idle / 2
            stale = self.queue.claim_stale(self._claim_idle, size)
            if stale:
                log.info("endpoint %s: took over %d events another dispatcher left",
                         self.name, len(stale))
                self._next_claim = now  # there may be more
                return stale
        return self.queue.new(size, READ_BLOCK_MS)

    def _handle(self, batch: list[Entry]) -> None:
        send = [e for e in batch if wanted(self.endpoint, e)]
        skipped = [e.id for e in batch if e not in send]
        if skipped:
            self.queue.ack(skipped)
            self._metrics.filtered.labels(self.name).inc(len(skipped))
        attempt = 0
        while send and not self._stop.is_set():
            if attempt:
                self.queue.touch([e.id for e in send])
            outcome = delivery.post(self.endpoint, envelope([e.event for e in send]))
            self._metrics.post_seconds.labels(self.name).observe(outcome.seconds)
            if outcome.ok:
                self.queue.ack([e.id for e in send])
                now = time.time()
                self._metrics.delivered.labels(self.name).inc(len(send))
                for e in send:
                    self._metrics.latency.labels(self.name).observe(max(0.0, e.age(now)))
                self._metrics.retrying.labels(self.name).set(0)
                log.info("endpoint %s: delivered %d events (%s, %.0f ms)", self.name,
                         len(send), outcome.detail, outcome.seconds * 1000)
                return
            self._metrics.failed.labels(self.name).inc()
            send = self._expire(send, outcome.detail, attempt + 1)
            if not send:
                break
            wait = min(self.endpoint["backoff_initial"] * 2 ** attempt,
                       self.endpoint["backoff_max"])
            log.warning("endpoint %s: %d events not delivered (%s, attempt %d); "
                        "retrying in %.1fs", self.name, len(send), outcome.detail,
                        attempt + 1, wait)
            self._metrics.retrying.labels(self.name).set(len(send))
            self._sleep(wait, [e.id for e in send])
            self._metrics.retries.labels(self.name).inc()
            attempt += 1
        self._metrics.retrying.labels(self.name).set(0)

    def _expire(self, send: list[Entry], error: str, attempts: int) -> list[Entry]:
        now = time.time()
        expired = [e for e in send if e.age(now) > self.endpoint["max_age"]]
        if expired:
            self.queue.dead_letter(expired, error, attempts)
            self._metrics.dead_lettered.labels(self.name).inc(len(expired))
            log.error("endpoint %s: %d events older than max_age %gs moved to dead letters "
                      "(last error: %s; ids %s)", self.name, len(expired),
                      self.endpoint["max_age"], error,
                      ", ".join(json.loads(e.event).get("id", "?") for e in expired[:10]))
        return [e for e in send if e not in expired]

    def _sleep(self, seconds: float, ids: list[str]) -> None:
        """Wait, keeping the entries ours (see `EndpointQueue.touch`)."""
        deadline = time.monotonic() + seconds
        step = max(0.05, self._claim_idle / 3)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(step, left))
            if time.monotonic() < deadline:
                self.queue.touch(ids)
