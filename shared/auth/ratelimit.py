"""Failed logins counted per user and per client address, over a sliding window.

After `limit` failures of one user name, or from one address, within `window`
seconds, further attempts (right or wrong) get 429 with Retry-After until the
oldest counted failure leaves the window. Counting both stops guessing one
user's password from many addresses and many users' from one.

Where the counts live: in Redis when the router has one (`router.events_url`,
set by `dockyard serve`), so that every router process and every router of a
deployment counts the same failures; one sorted set per user and per address
(``<prefix>auth:fail:u:<user>``), holding at most `limit` timestamps and
expiring after `window`. Without Redis, or while it does not answer, in this
process's memory (bounded: past `max_keys` names the least recent are
forgotten), which limits each process on its own.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any

log = logging.getLogger("dockyard.auth.ratelimit")


class FailedLogins:
    def __init__(self, limit: int, window: float, max_keys: int = 100_000,
                 redis: Any = None, prefix: str = "dockyard:") -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._redis = redis
        self._prefix = prefix + "auth:fail:"
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()
        self._redis_down_logged = False

    @staticmethod
    def _keys(user: str, address: str) -> list[str]:
        return (["u:" + user] if user else []) + ["a:" + address]

    def _redis_failed(self, e: Exception) -> None:
        if not self._redis_down_logged:
            log.warning("failed-login counts fall back to this process: redis: %s", e)
            self._redis_down_logged = True

    # -- in memory -----------------------------------------------------------

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    # -- the interface -------------------------------------------------------

    def retry_after(self, user: str, address: str) -> int:
        """Seconds to wait before trying again; 0 when a login may be tried now."""
        now = time.time()
        wait = 0.0
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for key in self._keys(user, address):
                    pipe.zremrangebyscore(self._prefix + key, "-inf", now - self.window)
                    pipe.zcard(self._prefix + key)
                    pipe.zrange(self._prefix + key, 0, 0, withscores=True)
                answers = pipe.execute()
                for i in range(0, len(answers), 3):
                    count, oldest = answers[i + 1], answers[i + 2]
                    if count >= self.limit and oldest:
                        wait = max(wait, oldest[0][1] + self.window - now)
                self._redis_down_logged = False
                return math.ceil(wait) if wait > 0 else 0
            except Exception as e:  # any redis failure: count here instead
                self._redis_failed(e)
        with self._lock:
            wait = max((self._wait(k, now) for k in self._keys(user, address)), default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, user: str, address: str) -> None:
        now = time.time()
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                member = f"{now:.6f}:{os.urandom(4).hex()}"
                for key in self._keys(user, address):
                    pipe.zadd(self._prefix + key, {member: now})
                    # Only the newest `limit` failures matter.
                    pipe.zremrangebyrank(self._prefix + key, 0, -(self.limit + 1))
                    pipe.expire(self._prefix + key, math.ceil(self.window))
                pipe.execute()
                return
            except Exception as e:
                self._redis_failed(e)
        with self._lock:
            for key in self._keys(user, address):
                times = self._failures.setdefault(key, deque(maxlen=self.limit))
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
