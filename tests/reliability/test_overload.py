"""Past capacity: a prompt 503 with Retry-After, and serving again afterwards
(shared/overload.py)."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from shared import config as config_mod
from shared.server import make_server
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient


def _slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    time.sleep(0.25)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def _answers(port: int, count: int, request: bytes, limit: float,
             gap: float = 0.0) -> list[tuple[bytes, float]]:
    """Open `count` connections, send `request` on the n-th `n * gap` seconds after
    the start, and collect each whole answer (up to the server's close or its
    Content-Length) with its latency; bounded by `limit` seconds."""
    sel = selectors.DefaultSelector()
    answers: dict[socket.socket, bytearray] = {}
    sent_at: dict[socket.socket, float] = {}
    start = time.monotonic()
    for n in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        answers[s] = bytearray()
        sent_at[s] = start + n * gap  # when it is due
        sel.register(s, selectors.EVENT_WRITE)
    deadline = start + limit
    done: list[tuple[bytes, float]] = []
    while answers and time.monotonic() < deadline:
        for key, mask in sel.select(0.01 if gap else 0.5):
            s = key.fileobj
            now = time.monotonic()
            if mask & selectors.EVENT_WRITE:
                if now >= sent_at[s]:
                    s.send(request)
                    sent_at[s] = now
                    sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(65536)
            except ConnectionError:
                chunk = b""
            buf = answers[s]
            buf += chunk
            if not chunk or _complete(buf):
                sel.unregister(s)
                s.close()
                done.append((bytes(answers.pop(s)), now - sent_at[s]))
    for s in answers:
        s.close()
    assert not answers, f"{len(answers)} of {count} connections got no answer in {limit}s"
    return done


def _complete(buf: bytearray) -> bool:
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_requests_past_capacity_get_503_with_retry_after_promptly() -> None:
    cfg = config_mod.load(None)
    cfg["http"]["queue_timeout"] = 1
    server = make_server(_slow_app, "127.0.0.1", 0, cfg, 2)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        # 2 threads at 4 requests/s each, asked for 20/s: after 1 s of queueing
        # new arrivals are refused at once, and what was queued is served.
        answers = _answers(int(server.effective_port), 60, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
                           limit=20, gap=0.05)
        ok = [(a, t) for a, t in answers if a.startswith(b"HTTP/1.1 200")]
        shed = [(a, t) for a, t in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(ok) + len(shed) == 60, [a[:40] for a, _ in answers]
        assert ok and shed
        head, _, body = shed[0][0].partition(b"\r\n\r\n")
        assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close" in head
        assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
        # A refusal never waits in the queue (queued requests wait 1-3 s here).
        assert max(t for _, t in shed) < 1.0, max(t for _, t in shed)
        answer, _ = _answers(int(server.effective_port), 1, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
                             limit=10)[0]
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        server.close()


def test_a_burst_of_1000_connections_leaves_the_registry_serving(
        module_dockyard: Dockyard) -> None:
    client = RegistryClient(module_dockyard.url)
    digest, _ = client.push_image("burst/app", "latest")
    request = (b"GET /v2/burst/app/manifests/latest HTTP/1.1\r\nHost: t\r\n"
               b"Accept: application/vnd.oci.image.manifest.v1+json\r\n\r\n")
    answers = _answers(module_dockyard.port, 1000, request, limit=60)
    statuses = [a[9:12] for a, _ in answers]
    assert set(statuses) <= {b"200", b"503"}, set(statuses)
    for a, _ in answers:
        if a[9:12] == b"503":
            assert b"\r\nRetry-After: " in a
    assert statuses.count(b"200") > 0
    print(f"burst: {statuses.count(b'200')} answered 200, {statuses.count(b'503')} 503")
    # Still serving, reads and writes.
    r = client.get_manifest("burst/app", "latest")
    assert r.status == 200 and r.headers["Docker-Content-Digest"] == digest
    client.push_image("burst/app", "after")
