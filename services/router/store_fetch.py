"""What a router does when storage keeps blobs in an object store (``storage.backend: s3``).

A blob GET streamed by storage crosses two Python processes: the object
store -> storage -> router -> client. Here the router fetches the object
itself, in the manner of its shared-disk reads (`services.router.shared_disk`):

- On a blob GET the router tells storage it can fetch a URL
  (``X-Dockyard-Accel: url``). Storage decides everything as always (the
  repository's link, the Range, the headers the client gets) and, instead
  of the bytes, names a presigned GET URL of the object, good for a few
  minutes (``X-Dockyard-Fetch-Url``), and the byte range to send
  (``X-Dockyard-Offset``/``-Length``). The router GETs exactly that range
  from the store and relays it under storage's status and headers, so the
  client sees a plain 200 or 206.
- Access control is the router's and runs before any forward; the URL comes
  only from storage (a client's ``X-Dockyard-*`` headers are dropped before
  forwarding, and none is ever passed on to a client). HEAD is answered by
  storage alone, as before.
- The store's answer must be the range asked for: 206 with that
  Content-Range (or 200 for a whole object) and its length. Anything else (the
  store unreachable from this machine, an expired URL, a missing object) and
  the router asks storage again for the bytes themselves, before the client
  has seen anything. A store this router cannot reach is not offered for
  `RETRY_SECONDS`, so a router on another network pays for one failed connect
  at most that often.
- Connecting and each read wait at most ``storage.s3.timeout``, as storage's own
  calls do: a hung store costs the client that, then storage's own 503.
- Connections to the store are pooled, keep-alive, per scheme, host and port;
  https is verified as `storage.s3.verify_tls` says, against the system's
  certificates or the bundle in ``AWS_CA_BUNDLE`` (as boto3 does in storage).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from shared.http_client import ConnectFailed, ConnectionPool, RequestFailed, Response
from shared.shared_disk_headers import ACCEL_LENGTH, ACCEL_OFFSET, FETCH_URL

log = logging.getLogger("dockyard.router.store_fetch")

# Seconds a store this router could not connect to is not offered again.
RETRY_SECONDS = 30.0


class StoreFetch:
    def __init__(self, timeout: float, maxsize: int, verify_tls: bool = True) -> None:
        self._timeout = timeout
        self._maxsize = maxsize
        self._verify_tls = verify_tls
        self._tls: Any = None
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0

    def available(self) -> bool:
        """Whether to offer storage to fetch objects (not while the store is unreachable)."""
        return time.monotonic() >= self._down_until

    def open(self, resp: Response) -> tuple[Response, int] | None:
        """The store's answer to the range storage named, and its length; None when the
        router must ask storage for the bytes instead."""
        url = resp.header(FETCH_URL) or ""
        offset, length = resp.header(ACCEL_OFFSET) or "", resp.header(ACCEL_LENGTH) or ""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # a port that is not a number
            parts, port = None, 0
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or not offset.isdigit() or not length.isdigit() or int(length) == 0):
            log.error("storage named an object URL the router cannot fetch; ignored")
            return None
        first, size = int(offset), int(length)
        last = first + size - 1
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = [("Host", parts.netloc), ("Range", f"bytes={first}-{last}"),
                   ("Content-Length", "0")]
        pool = self._pool(parts.scheme, parts.hostname, port)
        try:
            answer = pool.request("GET", target, headers)
        except ConnectFailed as e:
            self._down_until = time.monotonic() + RETRY_SECONDS
            log.warning("object store unreachable from the router (%s); storage sends "
                        "blobs for %.0f s", e, RETRY_SECONDS)
            return None
        except RequestFailed as e:
            log.warning("object store GET failed: %s", e)
            return None
        if not _is_range(answer, first, last):
            log.warning("object store answered %s to a blob GET; asking storage instead",
                        answer.status)
            answer.close()
            return None
        return answer, size

    def _pool(self, scheme: str, host: str, port: int) -> ConnectionPool:
        key = (scheme, host, port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                tls = self._context() if scheme == "https" else None
                pool = self._pools[key] = ConnectionPool(
                    host, port, timeout=self._timeout, connect_timeout=self._timeout,
                    maxsize=self._maxsize, tls=tls)
            return pool

    def _context(self) -> Any:
        if self._tls is None:
            import ssl  # only routers in front of an https store pay for it

            context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
            if not self._verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls


def _is_range(answer: Response, first: int, last: int) -> bool:
    if answer.header("content-length") != str(last - first + 1):
        return False
    if answer.status == 206:
        return (answer.header("content-range") or "").startswith(f"bytes {first}-{last}/")
    # A store may answer a range that covers the whole object with the whole object.
    return answer.status == 200 and first == 0
