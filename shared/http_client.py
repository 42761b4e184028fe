"""Pooled keep-alive HTTP/1.1 connections from one dockyard process to another.

The router forwards every request it does not answer itself, and storage
calls the index for every manifest PUT, so this client's cost is paid per
request. Measured on the 2-core CI machine against a waitress backend, one
small request costs the calling process about 440 µs of CPU through
urllib3, 260 µs through http.client (its header parsing goes through the
email package) and about 70 µs here: responses are parsed by httptools
(llhttp, Node.js's parser, in C) and requests are written as one buffer.

What it leaves out is what dockyard's own backends never need: proxies,
redirects, content decoding, cookies. Bodies stream both ways. TLS (a pool
given an `ssl.SSLContext`) is for the one outside server it talks to, an
object store (`services.router.store_fetch`).
With a `signer` (a `shared.service_auth.ServiceKey`) every request, each
retry included, is signed afresh as it is sent.

Errors come in two kinds, because a caller's retry decision depends on it:
`ConnectFailed` means nothing was sent; `RequestFailed` means the request
may have reached the backend (and may have been applied).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import httptools

READ_SIZE = 1024 * 1024
# Reads for headers and small bodies. Not READ_SIZE: socket.recv allocates its
# whole size before it shrinks the result, and 1 MiB allocations per small
# answer raise glibc's mmap threshold, after which freed ones stay in the heap
# (the router's resident memory doubled under load).
SMALL_READ = 64 * 1024
_BODY_BLOCK = 1024 * 1024


class ConnectFailed(ConnectionError):
    """No connection to the backend: nothing was sent."""


class RequestFailed(ConnectionError):
    """The connection failed after the request started: it may have been applied."""


class _Parse:
    """httptools callbacks for one response; a new parser per response keeps no
    state between requests (and lets a HEAD's answer end after its headers)."""

    __slots__ = ("body", "done", "headers", "headers_done", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.keep_alive = False
        self.body: list[bytes] = []
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked now: once the message is complete the parser has reset and says False.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Response:
    """A response whose headers have arrived; the body is read on demand.

    `release()` hands the connection back to its pool when the body was read
    to the end, and closes it otherwise; `close()` always closes it.
    """

    def __init__(self, conn: _Connection, parse: _Parse, head: bool) -> None:
        self._conn: _Connection | None = conn
        self._parse = parse
        self.status = parse.parser.get_status_code()
        self.reason = parse.reason.decode("latin-1")
        self.headers = parse.headers
        # A HEAD's answer announces a length it never sends.
        self.complete = head or parse.done
        self._keep_alive = parse.keep_alive
        # The body bytes still to come, when a Content-Length delimits the body:
        # those are read off the socket as they are, past the parser, which would
        # copy each piece once more (two thirds of a router's CPU relaying a blob).
        # None: the parser delimits it (chunked, or read to the close).
        self._left: int | None = None
        if not self.complete and self.header("transfer-encoding") is None:
            length = self.header("content-length")
            if length is not None and length.isdigit():
                self._left = int(length) - sum(len(piece) for piece in parse.body)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for k, v in self.headers:
            if k.lower() == lowered:
                return v
        return None

    def stream(self, size: int = SMALL_READ) -> Iterator[bytes]:
        parse = self._parse
        while True:
            if parse.body:
                chunks, parse.body = parse.body, []
                yield from chunks
            if self.complete or parse.done:
                self.complete = True
                return
            if self._conn is None:
                raise RequestFailed("the response was closed before its end")
            if self._left is not None:
                yield from self._rest(self._conn, size)
                return
            self._conn.receive_into(parse, size)

    def _rest(self, conn: _Connection, size: int) -> Iterator[bytes]:
        assert self._left is not None
        while self._left > 0:
            data = conn.receive(min(size, self._left))
            self._left -= len(data)
            yield data
        self.complete = True

    def readinto(self, buffer: Any, *, some: bool = False) -> int:
        """Fill `buffer` with the body's next bytes; fewer only where the body ends, 0
        after it. With `some`, what one read of the socket gives, once there is any.
        A body is read either with `stream` or with this, not both."""
        view = memoryview(buffer).cast("B")
        parse = self._parse
        filled = 0
        while filled < len(view) and not (some and filled):
            if parse.body:
                # What came with the headers (or a chunked body, piece by piece).
                piece = parse.body[0]
                n = min(len(piece), len(view) - filled)
                view[filled:filled + n] = piece[:n]
                if n == len(piece):
                    parse.body.pop(0)
                else:
                    parse.body[0] = piece[n:]
                filled += n
                continue
            if self.complete or parse.done or self._left == 0:
                self.complete = True
                break
            if self._conn is None:
                raise RequestFailed("the response was closed before its end")
            if self._left is None:
                self._conn.receive_into(parse, min(SMALL_READ, len(view) - filled))
                continue
            n = self._conn.recv_into(view[filled:filled + min(self._left, len(view) - filled)])
            self._left -= n
            filled += n
        return filled

    def read(self) -> bytes:
        return b"".join(self.stream())

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.complete and self._keep_alive:
            conn.pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Connection:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        try:
            self.sock = socket.create_connection((pool.host, pool.port),
                                                 timeout=pool.connect_timeout)
        except OSError as e:
            raise ConnectFailed(f"{pool.host}:{pool.port}: {e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if pool.tls is not None:
            try:  # the handshake, within the connect timeout
                self.sock = pool.tls.wrap_socket(self.sock, server_hostname=pool.host)
            except OSError as e:  # ssl.SSLError included
                self.sock.close()
                raise ConnectFailed(f"{pool.host}:{pool.port}: TLS: {e}") from None
        self.sock.settimeout(pool.timeout)

    def stale(self) -> bool:
        """True when an idle connection was closed by its backend (or has stray bytes).

        A peek rather than select(), which cannot watch descriptors past 1024;
        in non-blocking mode, since with a timeout Python would wait for data.
        """
        if self.pool.tls is not None:
            # A TLS socket takes no recv flags; readable while idle means closed (or
            # a close_notify), either way not reusable.
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(self.sock.pending() or poller.poll(0))  # type: ignore[attr-defined]
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # open, and nothing unread: ready for a request
        except OSError:
            return True
        finally:
            self.sock.settimeout(self.pool.timeout)
        return True  # closed (b"") or bytes no request asked for

    def send(self, head: bytes, body: bytes | Iterable[bytes] | Any | None) -> None:
        try:
            if body is None or isinstance(body, bytes | bytearray | memoryview):
                if body is None or len(body) <= SMALL_READ:
                    # A small request goes out in one send, headers and body together.
                    self.sock.sendall(head + bytes(body or b""))
                else:
                    self.sock.sendall(head)
                    self.sock.sendall(body)
                return
            self.sock.sendall(head)
            if hasattr(body, "read"):
                while block := body.read(_BODY_BLOCK):
                    self.sock.sendall(block)
            else:
                for block in body:
                    self.sock.sendall(block)
        except OSError as e:
            self.close()
            raise RequestFailed(f"sending to {self.pool.host}:{self.pool.port}: {e}") from None

    def receive(self, size: int) -> bytes:
        """What the socket has, up to `size` bytes (at least one)."""
        return self._read(self.sock.recv, size)

    def recv_into(self, view: memoryview) -> int:
        """Read what the socket has into `view` (at least one byte)."""
        return self._read(self.sock.recv_into, view)

    def _read(self, read: Any, arg: Any) -> Any:
        try:
            got = read(arg)
        except OSError as e:
            self.close()
            raise RequestFailed(f"reading from {self.pool.host}:{self.pool.port}: {e}") from None
        if not got:
            self.close()
            raise RequestFailed(f"{self.pool.host}:{self.pool.port} closed the connection")
        return got

    def receive_into(self, parse: _Parse, size: int = SMALL_READ) -> None:
        data = self.receive(size)
        try:
            parse.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.close()
            raise RequestFailed(f"bad response from {self.pool.host}:{self.pool.port}: "
                                f"{e}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ConnectionPool:
    """Keep-alive connections to one backend, at most `maxsize` of them idle."""

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float = 2.0,
                 maxsize: int = 32, signer: Any = None, tls: Any = None) -> None:
        """`tls`: an `ssl.SSLContext` to speak HTTPS with, or None for plain HTTP."""
        self.host = host
        self.port = port
        self.signer = signer
        self.tls = tls
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._maxsize = maxsize

    def put(self, conn: _Connection) -> None:
        if self._idle.qsize() >= self._maxsize:
            conn.close()
        else:
            self._idle.put(conn)

    def _get(self) -> _Connection:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return _Connection(self)
            if not conn.stale():
                return conn
            conn.close()

    def request(self, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes | Iterable[bytes] | Any | None = None,
                timeout: float | None = None) -> Response:
        """Send one request and wait for its response's headers.

        `headers` must include Content-Length when there is a body; a body is
        bytes, a file-like object or an iterable of bytes.
        """
        conn = self._get()
        if timeout is not None:
            conn.sock.settimeout(timeout)
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers)
        if self.signer is not None:
            lines.append(f"X-Dockyard-Signature: {self.signer.sign(method, target, headers, body)}"
                         "\r\n")
        if not any(k.lower() == "host" for k, _ in headers):
            lines.append(f"Host: {self.host}:{self.port}\r\n")
        lines.append("\r\n")
        conn.send("".join(lines).encode("latin-1"), body)
        parse = _Parse()
        while not parse.headers_done:
            conn.receive_into(parse)
        if timeout is not None:
            conn.sock.settimeout(self.timeout)
        return Response(conn, parse, head=method == "HEAD")

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
