"""Past capacity, a prompt 503 with Retry-After instead of a queue that grows.

waitress parses a request on its main thread and queues it for a pool of
worker threads; the queue has no bound, so under more load than the workers
can take every request waits longer, and clients time out instead of
backing off. `SheddingDispatcher` bounds the wait instead of the length
(as CoDel does): while the oldest queued request has waited more than
`max_wait` seconds, a newly arrived request is answered at once, by the main
thread,
with `503 Service Unavailable`, the OCI error body, `Retry-After` and
`Connection: close` (closing sheds the connection as well). Requests already
queued are still served, in order. The age of the oldest, rather than an
estimate from the queue's length, is what decides: a registry mixes
requests of a millisecond with uploads of minutes, and no average time per
request predicts a wait among them.

Only a connection's first queued request is shed (`OciChannel.received`
marks it); a pipelined follow-up is queued by a worker thread, and its
connection's answers must stay in order.

waitress also logs a warning for each request queued while no worker is
idle; under load that is one log line per request from the main thread, so
the depth is logged at most every `LOG_EVERY` seconds here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from waitress.task import ThreadedTaskDispatcher

from shared import errors

log = logging.getLogger("dockyard.server")
LOG_EVERY = 10.0


def shed_answer(retry_after: int) -> bytes:
    body = errors.render(errors.Unavailable("server over capacity, retry later"))
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), retry_after, body))


class SheddingDispatcher(ThreadedTaskDispatcher):
    def __init__(self, max_wait: float) -> None:
        super().__init__()
        self.max_wait = max_wait
        self.retry_after = max(1, round(max_wait))
        self.shed = 0
        self._logged_at = 0.0

    def _too_late(self, now: float) -> bool:
        return (self.max_wait > 0 and bool(self.queue)
                and now - getattr(self.queue[0], "queued_at", now) > self.max_wait)

    def add_task(self, task: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if not (getattr(task, "sheddable", False) and self._too_late(now)):
                task.queued_at = now
                self.queue.append(task)
                self.queue_cv.notify()
                depth = len(self.queue) - (len(self.threads) - self.stop_count
                                           - self.active_count)
                if depth > 0 and now - self._logged_at > LOG_EVERY:
                    self._logged_at = now
                    log.warning("%d requests wait for a worker thread", depth)
                return
            self.shed += 1
        task.shed(shed_answer(self.retry_after))


__all__ = ["SheddingDispatcher", "shed_answer"]
