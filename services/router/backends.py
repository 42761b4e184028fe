"""Backend pools: the addresses of one service, pooled connections, and their health."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from shared.http_client import ConnectFailed, ConnectionPool, RequestFailed

log = logging.getLogger("dockyard.router.backends")

# How long a backend that refused a connection is passed over before it is tried again.
DOWN_SECONDS = 1.0


class Backend:
    def __init__(self, url: str, timeout: float, maxsize: int, signer: Any = None) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.pool = ConnectionPool(parts.hostname or "127.0.0.1", parts.port or 80,
                                   timeout=timeout, maxsize=maxsize, signer=signer)
        self.down_until = 0.0

    def mark_down(self) -> None:
        if self.down_until <= time.monotonic():
            log.warning("backend %s is not answering", self.url)
        self.down_until = time.monotonic() + DOWN_SECONDS

    @property
    def up(self) -> bool:
        return self.down_until <= time.monotonic()

    def probe(self, path: str = "/readyz") -> tuple[bool, str]:
        try:
            resp = self.pool.request("GET", path, [("Content-Length", "0")], timeout=1.0)
            try:
                resp.read()
            finally:
                resp.release()
        except (ConnectFailed, RequestFailed) as e:
            return False, type(e).__name__
        return resp.status == 200, "ready" if resp.status == 200 else f"status {resp.status}"


class Pool:
    """The backends of one service; requests are spread round-robin over those that are up."""

    def __init__(self, name: str, urls: list[str], timeout: float, maxsize: int,
                 signer: Any = None) -> None:
        """`signer` signs every request (`shared.service_auth.ServiceKey`)."""
        self.name = name
        self.backends = [Backend(u, timeout, maxsize, signer) for u in urls]
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def order(self) -> list[Backend]:
        """Backends to try for one request: the live ones first, starting round-robin."""
        with self._lock:
            start = next(self._counter) % len(self.backends)
        rotated = self.backends[start:] + self.backends[:start]
        return [b for b in rotated if b.up] + [b for b in rotated if not b.up]
