"""Group commit: concurrent callers share one call, with no added wait.

A caller whose item finds no call in flight sends at once, alone. Items that
arrive while a call is in flight wait for it to end, and then one of their
callers sends all of them together. At low load every item goes alone; under
load each call carries what arrived during the previous one, so the fixed
cost of a call (an HTTP hop, a Redis round trip, an fsync) is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class Batcher(Generic[T]):
    def __init__(self, send: Callable[[list[T]], None], max_batch: int = 64) -> None:
        self._send = send
        self._max_batch = max_batch
        self._pending: list[_Slot[T]] = []
        self._busy = False
        self._cond = threading.Condition()

    def submit(self, item: T) -> None:
        """Return once `item` was sent; raise what the call that carried it raised."""
        slot = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            while True:
                while not slot.done and self._busy:
                    self._cond.wait()
                if slot.done:
                    break
                # No call in flight: this caller sends what is pending, oldest first.
                self._busy = True
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                self._cond.release()
                error: BaseException | None = None
                try:
                    self._send([s.item for s in batch])
                except BaseException as e:
                    error = e
                finally:
                    self._cond.acquire()
                for s in batch:
                    s.done, s.error = True, error
                self._busy = False
                self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
