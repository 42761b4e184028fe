"""Minimal keep-alive HTTP client with strict response checking.

Each worker thread owns one ``Client`` (persistent connections, no pool lock,
no per-request connection setup). Whole requests (``request``) go through
``shared.http_client``, whose C response parser costs this process about a
quarter of http.client's CPU per request: on 2 cores the load generator
shares the machine with the server, so a cheaper client measures the server
rather than the client; a body given as bytes or a memoryview is sent as it
is, never copied. Chunk-encoded uploads and streamed responses (``send``:
blob pulls) use http.client, whose cost there is per byte, not per request.
Every response the benchmark relies on goes through ``expect`` so that a
registry that answers wrongly fails the run instead of looking fast.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from shared.http_client import ConnectionPool

# Idle keep-alive connections may be closed by the server between phases;
# these errors on a *reused* connection mean "stale", not "server broken".
_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class ProtocolError(Exception):
    """A registry answered a request in a way the OCI distribution spec forbids."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        request_headers: Mapping[str, str] | None = None,
        request_body: bytes | None = None,
        status: int | None = None,
        response_headers: Mapping[str, str] | None = None,
        response_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.request_headers = dict(request_headers or {})
        self.request_body = request_body
        self.status = status
        self.response_headers = dict(response_headers or {})
        self.response_body = response_body

    def describe(self) -> str:
        """Full request/response transcript, for the report to the lead."""
        lines = [f"protocol error: {self.message}", f"> {self.method} {self.url}"]
        lines += [f"> {k}: {v}" for k, v in self.request_headers.items()]
        if self.request_body is not None:
            lines.append(f"> [body {len(self.request_body)} bytes] {_excerpt(self.request_body)}")
        if self.status is not None:
            lines.append(f"< HTTP {self.status}")
            lines += [f"< {k}: {v}" for k, v in self.response_headers.items()]
            if self.response_body:
                lines.append(f"< [body] {_excerpt(self.response_body)}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "transcript": self.describe()}


def _excerpt(data: bytes, limit: int = 1500) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


@dataclass
class Response:
    method: str
    url: str
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    request_headers: dict[str, str]
    request_body: bytes | None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError(
            message,
            method=self.method,
            url=self.url,
            request_headers=self.request_headers,
            request_body=self.request_body,
            status=self.status,
            response_headers=self.headers,
            response_body=self.body,
        )

    def expect_header(self, name: str, value: str | None = None) -> str:
        """Return header ``name``; fail if missing or (when given) not equal to ``value``."""
        got = self.header(name)
        if got is None:
            raise self.fail(f"missing {name} header")
        if value is not None and got != value:
            raise self.fail(f"{name} is {got!r}, expected {value!r}")
        return got

    def next_link(self) -> str | None:
        """Target of a ``Link: <...>; rel="next"`` header (pagination), if any."""
        link = self.header("link")
        if not link:
            return None
        match = _LINK_NEXT.search(link)
        if match is None:
            raise self.fail(f"unparseable Link header {link!r}")
        return match.group(1)


class _NoDelayConnection(http.client.HTTPConnection):
    # http.client writes headers and a large body in separate send() calls;
    # without TCP_NODELAY, Nagle + delayed ACK can add ~40 ms to a request.
    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """One persistent connection to one registry. Not thread-safe: one per thread."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            # The benchmark must only ever talk to loopback.
            raise ValueError(f"refusing non-loopback target {base_url}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._netloc = parts.netloc
        self._timeout = timeout
        self._conn: _NoDelayConnection | None = None
        self._used = False
        self._whole = ConnectionPool(self._host, self._port, timeout=timeout, maxsize=1)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._used = False
        self._whole.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path_of(self, location: str) -> str:
        """Turn a Location/Link value (absolute or relative) into a request path.

        Refuses to follow a URL that points anywhere but this registry.
        """
        absolute = urljoin(self.base_url + "/", location)
        parts = urlsplit(absolute)
        if parts.netloc != self._netloc:
            raise ProtocolError(f"URL {location!r} leaves the registry under test ({self._netloc})")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _connection(self) -> _NoDelayConnection:
        if self._conn is None:
            self._conn = _NoDelayConnection(self._host, self._port, timeout=self._timeout)
            self._used = False
        return self._conn

    def send(
        self,
        method: str,
        path: str,
        body: bytes | memoryview | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send a request and return the unread response (for streaming bodies)."""
        hdrs = dict(headers or {})
        chunked = hdrs.get("Transfer-Encoding", "").lower() == "chunked"
        # A streamed (iterator) body cannot be replayed, so only plain bodies retry.
        retryable = body is None or isinstance(body, bytes | memoryview)
        for attempt in (0, 1):
            conn = self._connection()
            reused = self._used
            try:
                conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
                resp = conn.getresponse()
            except _STALE_ERRORS:
                self.close()
                if attempt == 0 and reused and retryable:
                    continue
                raise
            self._used = True
            return resp
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | memoryview | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        expect: int | tuple[int, ...] = 200,
    ) -> Response:
        """Send a request, read the whole response, and check its status."""
        if body is None or isinstance(body, bytes | memoryview):
            payload = body if body is not None else b""
            sent = [(k, v) for k, v in (headers or {}).items() if k.lower() != "content-length"]
            sent.append(("Content-Length", str(len(payload))))
            fast = self._whole.request(method, path, sent, payload)
            try:
                data = fast.read()
            finally:
                fast.release()
            status, got = fast.status, {k.lower(): v for k, v in fast.headers}
        else:
            resp = self.send(method, path, body, headers)
            data = resp.read()
            if resp.will_close:
                self.close()
            status, got = resp.status, {k.lower(): v for k, v in resp.getheaders()}
        result = Response(
            method=method,
            url=self.base_url + path,
            status=status,
            headers=got,
            body=data,
            request_headers=dict(headers or {}),
            request_body=body if isinstance(body, bytes) and len(body) <= 65536 else None,
        )
        wanted = (expect,) if isinstance(expect, int) else expect
        if result.status not in wanted:
            raise result.fail(f"status {result.status}, expected {' or '.join(map(str, wanted))}")
        return result


def wait_ready(base_url: str, path: str, timeout: float, alive: Any = None) -> None:
    """Poll ``path`` until it returns 200; ``alive()`` returning False aborts early."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server at {base_url} exited before becoming ready")
        try:
            with Client(base_url, timeout=2.0) as c:
                r = c.request("GET", path, expect=tuple(range(100, 600)))
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{base_url}{path} not ready after {timeout:.0f}s (last: {last})")
