"""A bounded, expiring memory of verified credentials, keyed by a keyed hash.

bcrypt costs tens of milliseconds per check by design; a client sending Basic
credentials on every request would pay it every time. Once verified, a
credential is remembered for `ttl` seconds under keyed BLAKE2b(process
secret, credential), a MAC: never the password itself, and the key is useless outside this
process. The least recently used entries go first beyond `size`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class VerifiedCache(Generic[V]):
    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, int, V]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, credential: bytes | str) -> bytes:
        if isinstance(credential, str):
            credential = credential.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(credential, key=self._secret, digest_size=32).digest()

    def get(self, key: bytes, generation: int = 0) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, gen, value = entry
        if gen != generation or expires <= time.monotonic():
            with self._lock:
                self._entries.pop(key, None)
            return None
        return value

    def put(self, key: bytes, value: V, generation: int = 0, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, generation, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
