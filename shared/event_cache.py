"""A bounded cache of answers derived from index state, kept honest by index events.

Every entry belongs to a *scope* (see `shared.events`). An entry is *fresh*,
and may be served without asking anyone, only while all of these hold:

- the events subscription is live, and was live without a break since the
  entry was stored (each change of state starts a new *epoch*);
- no event for its scope arrived since the answer was asked for: `stamp()`
  is taken before asking and `put()` refuses an answer whose scope (or
  epoch) moved meanwhile, so an answer that raced a change is never kept;
- it is younger than `ttl` seconds, a bound on the harm of an event that
  was lost without the subscription noticing.

An entry past any of these may still be served by `stale()` while the
source of truth is unreachable, within the caller's own age limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")

# Scopes whose generation is remembered; past this the whole cache starts a
# new epoch, which forgets them all at once instead of growing without bound.
MAX_SCOPES = 100_000


@dataclass(frozen=True, slots=True)
class Stamp:
    epoch: int
    generation: int


@dataclass(slots=True)
class _Entry(Generic[V]):
    scope: str
    value: V
    size: int
    at: float
    epoch: int


class EventCache(Generic[V]):
    def __init__(self, *, ttl: float, max_bytes: int, max_entry: int | None = None) -> None:
        self.ttl = ttl
        self._max_bytes = max_bytes
        self.max_entry = max_entry if max_entry is not None else max_bytes // 16
        self._entries: OrderedDict[Any, _Entry[V]] = OrderedDict()
        self._by_scope: dict[str, set[Any]] = {}
        self._bytes = 0
        self._epoch = 0
        self._live = False
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def live(self) -> bool:
        return self._live

    # -- events --------------------------------------------------------------

    def events_state(self, live: bool) -> None:
        with self._lock:
            self._epoch += 1
            self._live = live

    def forget_all(self) -> None:
        """Make every entry stale, and every answer in flight unstorable."""
        with self._lock:
            self._epoch += 1

    def invalidate(self, scope: str) -> None:
        with self._lock:
            if len(self._generation) >= MAX_SCOPES:
                self._generation.clear()
                self._epoch += 1
            self._generation[scope] = self._generation.get(scope, 0) + 1
            for key in self._by_scope.pop(scope, ()):
                self._bytes -= self._entries.pop(key).size

    # -- lookups -------------------------------------------------------------

    def stamp(self, scope: str) -> Stamp:
        with self._lock:
            return Stamp(self._epoch, self._generation.get(scope, 0))

    def fresh(self, key: Any) -> V | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if (entry is None or not self._live or entry.epoch != self._epoch
                    or now - entry.at >= self.ttl):
                return None
            self._entries.move_to_end(key)
            return entry.value

    def stale(self, key: Any, max_age: float) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.at >= max_age:
            return None
        return entry.value

    def put(self, stamp: Stamp, scope: str, key: Any, value: V, size: int) -> bool:
        """Store an answer asked for at `stamp`; False when it may be out of date or too big."""
        if size > self.max_entry or self.ttl <= 0:
            return False
        with self._lock:
            if stamp != Stamp(self._epoch, self._generation.get(scope, 0)):
                return False
            self._drop(key)
            self._entries[key] = _Entry(scope, value, size, time.monotonic(), stamp.epoch)
            self._by_scope.setdefault(scope, set()).add(key)
            self._bytes += size
            while self._bytes > self._max_bytes:
                self._drop(next(iter(self._entries)))
            return True

    def _drop(self, key: Any) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        keys = self._by_scope[entry.scope]
        keys.discard(key)
        if not keys:
            del self._by_scope[entry.scope]

    def __len__(self) -> int:
        return len(self._entries)
