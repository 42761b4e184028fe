"""shared.http_client against real servers on loopback: waitress for the normal
cases, and a raw socket server for the misbehaving ones."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from waitress.server import create_server

from shared.http_client import ConnectFailed, ConnectionPool, RequestFailed


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if path == "/echo":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body))),
                                  ("X-Method", environ["REQUEST_METHOD"]),
                                  ("X-Host", environ.get("HTTP_HOST", ""))])
        return [body]
    if path == "/chunked":
        # No Content-Length: waitress answers with chunked encoding, then closes.
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a" * 1000, b"b" * 70000, b"c"])
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    srv = create_server(_app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield "127.0.0.1", srv.effective_port
    srv.close()


def _pool(server: tuple[str, int], **kw: Any) -> ConnectionPool:
    return ConnectionPool(server[0], server[1], timeout=5.0, **kw)


def test_body_both_ways_and_keep_alive(server: tuple[str, int]) -> None:
    pool = _pool(server)
    for i in range(5):
        payload = bytes([i]) * (100_000 + i)
        resp = pool.request("PUT", "/echo", [("Content-Length", str(len(payload)))], payload)
        assert resp.status == 200 and resp.reason == "OK"
        assert resp.header("x-method") == "PUT"
        assert resp.read() == payload
        resp.release()
    # One connection, reused: released responses go back to the pool.
    assert pool._idle.qsize() == 1


def test_file_and_iterable_bodies(server: tuple[str, int]) -> None:
    pool = _pool(server)
    data = b"x" * (3 * 1024 * 1024 + 7)
    for body in (io.BytesIO(data), iter([data[:10], data[10:]])):
        resp = pool.request("POST", "/echo", [("Content-Length", str(len(data)))], body)
        assert resp.read() == data
        resp.release()


def test_chunked_response_streams(server: tuple[str, int]) -> None:
    pool = _pool(server)
    resp = pool.request("GET", "/chunked", [("Content-Length", "0")])
    assert resp.header("transfer-encoding") == "chunked"
    assert b"".join(resp.stream(4096)) == b"a" * 1000 + b"b" * 70000 + b"c"
    resp.release()


def test_sized_body_read_in_small_pieces_then_reused(server: tuple[str, int]) -> None:
    # A Content-Length body is read past the parser: every byte, none of the next answer's.
    pool = _pool(server)
    data = bytes(range(256)) * 4096 + b"end"
    for _ in range(2):
        resp = pool.request("PUT", "/echo", [("Content-Length", str(len(data)))], data)
        pieces = list(resp.stream(1000))
        # What came with the headers, then reads of at most the size asked for.
        assert b"".join(pieces) == data and max(map(len, pieces[1:])) <= 1000
        resp.release()
    assert pool._idle.qsize() == 1
    resp = pool.request("GET", "/nothing", [("Content-Length", "0")])
    assert resp.status == 404 and resp.read() == b""
    resp.release()


def test_readinto_fills_buffers_then_reuses(server: tuple[str, int]) -> None:
    pool = _pool(server)
    data = bytes(range(256)) * 4096 + b"end"
    for some in (False, True):
        resp = pool.request("PUT", "/echo", [("Content-Length", str(len(data)))], data)
        got, buf = bytearray(), bytearray(100_000)
        while n := resp.readinto(buf, some=some):
            # Whole buffers unless `some`, but the last.
            assert some or n == len(buf) or len(got) + n == len(data)
            got += buf[:n]
        assert got == data and resp.readinto(buf) == 0
        resp.release()
    assert pool._idle.qsize() == 1
    # A chunked body, through the parser.
    resp = pool.request("GET", "/chunked", [("Content-Length", "0")])
    got, buf = bytearray(), bytearray(5000)
    while n := resp.readinto(buf):
        got += buf[:n]
    assert got == b"a" * 1000 + b"b" * 70000 + b"c"
    resp.release()


def test_head_ends_after_headers(server: tuple[str, int]) -> None:
    pool = _pool(server)
    resp = pool.request("HEAD", "/echo", [("Content-Length", "0")])
    assert resp.status == 200 and resp.read() == b""
    resp.release()
    # The connection is still in step: the next request on it gets its own answer.
    resp = pool.request("GET", "/echo", [("Content-Length", "0")])
    assert resp.header("x-method") == "GET" and resp.read() == b""
    resp.release()
    assert pool._idle.qsize() == 1


def test_default_and_given_host(server: tuple[str, int]) -> None:
    pool = _pool(server)
    resp = pool.request("GET", "/echo", [("Content-Length", "0")])
    assert resp.header("x-host") == f"{server[0]}:{server[1]}"
    resp.release()
    resp = pool.request("GET", "/echo", [("Host", "registry.example:5000"),
                                         ("Content-Length", "0")])
    assert resp.header("x-host") == "registry.example:5000"
    resp.release()


def test_unfinished_or_closing_responses_are_not_pooled(server: tuple[str, int]) -> None:
    pool = _pool(server)
    resp = pool.request("GET", "/chunked", [("Content-Length", "0")])
    next(resp.stream(10))
    resp.release()  # body not read to the end
    resp = pool.request("GET", "/chunked", [("Content-Length", "0")])
    assert resp.header("connection") == "close"
    resp.read()
    resp.release()  # the server said Connection: close
    assert pool._idle.qsize() == 0


def test_connect_failure_is_distinct() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port, timeout=1.0)
    with pytest.raises(ConnectFailed):
        pool.request("GET", "/", [("Content-Length", "0")])


def _raw_server(handler: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_stale_pooled_connection_is_replaced() -> None:
    served = []

    def handler(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        served.append(1)
        # Then the server closes the idle connection (a restart, an idle timeout).

    port, thread = _raw_server(handler)
    pool = ConnectionPool("127.0.0.1", port, timeout=2.0)
    for i in range(2):
        resp = pool.request("GET", "/", [("Content-Length", "0")])
        assert resp.read() == b"hi"
        resp.release()
        # The server's close reaches this side before the next request.
        wait = time.monotonic() + 2
        while len(served) <= i and time.monotonic() < wait:
            time.sleep(0.01)
        time.sleep(0.05)
    thread.join(2)
    assert len(served) == 2


def test_body_split_across_the_headers_packet() -> None:
    # Part of the body arrives with the headers (through the parser), the rest later.
    def handler(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello")
        time.sleep(0.1)
        conn.sendall(b" world")
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    port, _ = _raw_server(handler)
    pool = ConnectionPool("127.0.0.1", port, timeout=2.0)
    for expected in (b"hello world", b"ok"):
        resp = pool.request("GET", "/", [("Content-Length", "0")])
        assert resp.read() == expected
        resp.release()


@pytest.mark.parametrize("answer", [
    b"",  # closed without a word
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed mid-body
    b"NOT HTTP AT ALL\r\n\r\n",  # garbage
])
def test_failures_after_sending_are_request_failed(answer: bytes) -> None:
    def handler(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(answer)

    port, _ = _raw_server(handler)
    pool = ConnectionPool("127.0.0.1", port, timeout=2.0)
    with pytest.raises(RequestFailed):
        pool.request("GET", "/", [("Content-Length", "0")]).read()


def test_timeout_is_request_failed() -> None:
    gate = threading.Event()

    def handler(conn: socket.socket) -> None:
        _read_request(conn)
        gate.wait(5)

    port, _ = _raw_server(handler)
    pool = ConnectionPool("127.0.0.1", port, timeout=0.3)
    with pytest.raises(RequestFailed):
        pool.request("GET", "/", [("Content-Length", "0")])
    gate.set()
