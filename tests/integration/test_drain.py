"""Graceful drain on SIGTERM, against a real storage process: new connections are
refused, requests in flight finish, idle connections close, and the process exits."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.service_auth import ServiceKey
from tests.support.processes import free_port, wait_http

# Storage answers only calls signed with the services' shared secret.
SECRET = "drain-test-internal-secret-0123456789"


class Storage:
    def __init__(self, root: Path, drain_timeout: float) -> None:
        self.port = free_port()
        self.log = root.with_suffix(".log")
        env = {**os.environ, "DOCKYARD_HTTP_DRAIN_TIMEOUT": str(drain_timeout),
               "DOCKYARD_INTERNAL_SECRET": SECRET}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "storage", "--listen",
                 f"127.0.0.1:{self.port}", "--root", str(root), "--index",
                 "http://127.0.0.1:9"], stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    s = Storage(tmp_path / "root", drain_timeout=10)
    yield s
    s.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed before an answer: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def push_across_a_stop(process: subprocess.Popen[bytes], sock: socket.socket, host: str,
                       repo: str) -> None:
    """Send a third of a monolithic upload through `sock`, SIGTERM `process` (a
    `dockyard serve`), wait past the old fixed 5 s grace, then send the rest: the
    push must complete (201, its digest) and `serve` then exit cleanly."""
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    sock.sendall((f"POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
                  f"Host: {host}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:100_000])
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(6.5)
    assert process.poll() is None, "serve exited with a push in flight"
    sock.sendall(data[100_000:])
    status, headers, body = read_response(sock)
    assert status == 201, body
    assert headers["docker-content-digest"] == digest
    assert process.wait(20) == 0


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def upload_head(digest: str, size: int) -> bytes:
    target = f"/v2/drain/test/blobs/uploads/?digest={digest}"
    # A streamed body, as the router sends one: storage checks it by its digest.
    signature = ServiceKey(SECRET).sign("POST", target, [], body=iter(()))
    return (f"POST {target} HTTP/1.1\r\n"
            f"Host: storage\r\nContent-Type: application/octet-stream\r\n"
            f"X-Dockyard-Signature: {signature}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()


def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(storage: Storage) -> None:
    data = os.urandom(256 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    busy = storage.connect()       # sends half its upload before the signal
    idle = storage.connect()       # kept alive, with nothing in progress
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: storage\r\n\r\n")
    assert read_response(idle)[0] == 200
    busy.sendall(upload_head(digest, len(data)) + data[:100_000])
    time.sleep(0.3)

    started = time.monotonic()
    storage.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        storage.connect()
    assert closed_by_peer(idle), "an idle keep-alive connection was left open"
    assert storage.process.poll() is None, "exited with a request in flight"

    busy.sendall(data[100_000:])
    status, headers, body = read_response(busy)
    assert status == 201, body
    assert headers["docker-content-digest"] == digest
    assert headers.get("connection") == "close"
    assert closed_by_peer(busy)
    assert storage.process.wait(10) == 0
    assert time.monotonic() - started < 5
    assert "drained" in storage.log.read_text()


def test_the_drain_ends_at_its_deadline(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "root", drain_timeout=1.5)
    try:
        stalled = storage.connect()
        stalled.sendall(upload_head("sha256:" + "0" * 64, 1000) + b"x" * 10)
        time.sleep(0.3)
        started = time.monotonic()
        storage.process.send_signal(signal.SIGTERM)
        assert storage.process.wait(10) == 0
        assert 1.0 < time.monotonic() - started < 5
        assert "still busy" in storage.log.read_text()
    finally:
        storage.stop()


def test_a_second_signal_exits_at_once(storage: Storage) -> None:
    stalled = storage.connect()
    stalled.sendall(upload_head("sha256:" + "0" * 64, 1000) + b"x" * 10)
    time.sleep(0.3)
    storage.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert storage.process.poll() is None
    storage.process.send_signal(signal.SIGINT)
    assert storage.process.wait(5) == 0
