"""waitress on dockyard's epoll loop (shared/event_loop.py), on loopback.

The loop must do per turn only the work of the connections that are ready,
so idle keep-alive connections cost nothing; and it must keep every
behaviour of waitress's own loop: pipelined requests answered in order,
slow readers and writers, hang-ups, the idle timeout and the connection limit.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared import config as config_mod
from shared import event_loop
from shared.server import OciChannel, make_server

pytestmark = pytest.mark.skipif(not event_loop.supported(), reason="needs epoll")

BIG = 32 * 1024 * 1024  # more than loopback's socket buffers hold
PIECES = [10, 70_000, 1, 1 << 20, 65_535, 65_536, 3 << 20, 5, 2 << 20, 100]


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/sha256":
        digest = hashlib.sha256()
        while chunk := environ["wsgi.input"].read(65536):
            digest.update(chunk)
        body = digest.hexdigest().encode()
    elif path == "/big":
        body = b"x" * BIG
    elif path == "/pieces":
        # Pieces below and above `DIRECT_PIECE`, each of its own bytes: those sent
        # from their own memory must arrive in order with the copied ones.
        pieces = [bytes([i % 251]) * size for i, size in enumerate(PIECES)]
        start_response("200 OK", [("Content-Length", str(sum(PIECES)))])
        return iter(pieces)
    elif path == "/sleep":
        time.sleep(0.3)
        body = b"slept"
    else:
        body = path.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _serve(cfg_changes: dict[str, Any] | None = None, threads: int = 4) -> tuple[Any, int]:
    cfg = config_mod.load(None)
    cfg["http"].update(cfg_changes or {})
    server = make_server(_app, "127.0.0.1", 0, cfg, threads)
    threading.Thread(target=server.run, daemon=True).start()
    return server, int(server.effective_port)


@pytest.fixture
def server() -> Iterator[tuple[Any, int]]:
    server, port = _serve()
    yield server, port
    server.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(s: socket.socket, buffered: bytearray) -> bytes:
    """One whole response (Content-Length framed) from `s`; leftovers stay in `buffered`."""
    while b"\r\n\r\n" not in buffered:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a response"
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    buffered[:] = body[length:]
    assert head.startswith(b"HTTP/1.1 200"), head
    return bytes(body[:length])


def _get(s: socket.socket, path: str) -> bytes:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return _read_response(s, bytearray())


def test_idle_keep_alive_connections_cost_no_work_per_request(
        server: tuple[Any, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # waitress's own loop asks every open connection readable() and writable()
    # on every turn: with 400 idle ones, each request would cost thousands of calls.
    _, port = server
    asked = [0]
    readable = OciChannel.readable

    def counting(self: OciChannel) -> bool:
        asked[0] += 1
        return readable(self)

    monkeypatch.setattr(OciChannel, "readable", counting)
    idle = [_connect(port) for _ in range(400)]
    try:
        for s in idle:
            assert _get(s, "/hello") == b"/hello"
        busy = _connect(port)
        _get(busy, "/warm")
        asked[0] = 0
        requests = 200
        for i in range(requests):
            assert _get(busy, f"/r{i}") == f"/r{i}".encode()
        per_request = asked[0] / requests
        assert per_request < 10, f"{per_request:.0f} readable() calls per request"
        busy.close()
    finally:
        for s in idle:
            s.close()


def test_pipelined_requests_answered_in_order(server: tuple[Any, int]) -> None:
    _, port = server
    s = _connect(port)
    s.sendall(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(50)))
    buffered = bytearray()
    for i in range(50):
        assert _read_response(s, buffered) == f"/p{i}".encode()
    s.close()


def test_slow_reader_does_not_hold_up_others(server: tuple[Any, int]) -> None:
    _, port = server
    slow = _connect(port)
    slow.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)  # the answer is now stuck in the server's buffers
    other = _connect(port)
    started = time.monotonic()
    for i in range(20):
        assert _get(other, f"/o{i}") == f"/o{i}".encode()
    assert time.monotonic() - started < 5
    # The slow reader still gets every byte, read a little at a time.
    buffered = bytearray()
    while b"\r\n\r\n" not in buffered:
        buffered += slow.recv(1024)
    _, _, body = bytes(buffered).partition(b"\r\n\r\n")
    received = len(body)
    while received < BIG:
        chunk = slow.recv(256 * 1024)
        assert chunk
        received += len(chunk)
    assert received == BIG
    assert _get(slow, "/after") == b"/after"


def test_streamed_pieces_arrive_whole_and_in_order(server: tuple[Any, int]) -> None:
    _, port = server
    expected = b"".join(bytes([i % 251]) * size for i, size in enumerate(PIECES))
    s = _connect(port)
    # Pipelined: the second answer's pieces queue behind the first's.
    s.sendall(b"GET /pieces HTTP/1.1\r\nHost: t\r\n\r\n" * 2
              + b"GET /end HTTP/1.1\r\nHost: t\r\n\r\n")
    buffered = bytearray()
    assert _read_response(s, buffered) == expected
    assert _read_response(s, buffered) == expected
    assert _read_response(s, buffered) == b"/end"
    s.close()


def test_slow_writer_body_arrives_whole(server: tuple[Any, int]) -> None:
    _, port = server
    body = bytes(range(256)) * 2048
    s = _connect(port)
    s.sendall(f"PUT /sha256 HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    for i in range(0, len(body), 65536):
        s.sendall(body[i:i + 65536])
        time.sleep(0.02)
    assert _read_response(s, bytearray()) == hashlib.sha256(body).hexdigest().encode()


def test_hang_up_during_a_request_leaves_the_server_serving(server: tuple[Any, int]) -> None:
    _, port = server
    for _ in range(20):
        s = _connect(port)
        s.sendall(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")
        s.close()
    for _ in range(20):
        s = _connect(port)
        s.sendall(b"GET /half HTTP/1.1\r\nHost:")  # never finished
        s.close()
    s = _connect(port)
    assert _get(s, "/alive") == b"/alive"


def test_idle_timeout_still_closes_connections() -> None:
    server, port = _serve({"idle_timeout": 2})
    try:
        s = _connect(port)
        assert _get(s, "/x") == b"/x"
        started = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""
        assert time.monotonic() - started < 6
    finally:
        server.close()


def test_connection_limit_then_serving_again() -> None:
    server, port = _serve({"connection_limit": 20})
    try:
        # waitress counts its listener and its trigger pipe against the limit too.
        held = [_connect(port) for _ in range(18)]
        for s in held:
            assert _get(s, "/held") == b"/held"
        waiting = _connect(port)  # queued in the backlog, not accepted
        waiting.sendall(b"GET /queued HTTP/1.1\r\nHost: t\r\n\r\n")
        for s in held:
            s.close()
        assert _read_response(waiting, bytearray()) == b"/queued"
    finally:
        server.close()
