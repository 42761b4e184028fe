"""Failed logins counted per user and per client address, over a sliding window.

After `limit` failures of one user name, or from one address, within `window`
seconds, further attempts (right or wrong) get 429 with Retry-After until the
oldest counted failure leaves the window. Counting both stops guessing one
user's password from many addresses and many users' from one. Memory is
bounded: past `max_keys` tracked names the least recent are forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque


class FailedLogins:
    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def retry_after(self, user: str, address: str) -> int:
        """Seconds to wait before trying again; 0 when a login may be tried now."""
        now = time.monotonic()
        with self._lock:
            wait = max(self._wait("u:" + user, now) if user else 0.0,
                       self._wait("a:" + address, now))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("u:" + user) if user else None, "a:" + address):
                if key is None:
                    continue
                times = self._failures.setdefault(key, deque(maxlen=self.limit))
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
