"""Backends found by name: every address used, re-resolved, unhealthy ones passed over.

The backends are real HTTP servers on their own loopback addresses; the
resolver is a table the test edits, standing in for the DNS answers a
headless service would give as pods come and go.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared import discovery
from shared.discovery import Endpoints
from shared.http_client import ConnectionPool


class Backend:
    """A tiny HTTP server whose /readyz answer the test sets."""

    def __init__(self, host: str, port: int) -> None:
        self.ready = 200
        self.hits = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status = backend.ready if self.path == "/readyz" else 200
                if self.path != "/readyz":
                    backend.hits += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def net() -> str:
    return f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"


@pytest.fixture
def backends(net: str) -> Iterator[list[Backend]]:
    port = random.randint(20000, 60000)
    started = [Backend(f"{net}.{i}", port) for i in (1, 2, 3)]
    yield started
    for b in started:
        b.close()


def make_pool(host: str, port: int) -> ConnectionPool:
    return ConnectionPool(host, port, timeout=2.0, maxsize=4)


def get(endpoints: Endpoints) -> str:
    for endpoint in endpoints.order():
        try:
            resp = endpoint.pool.request("GET", "/x", [("Content-Length", "0")])
        except ConnectionError:
            endpoint.mark_down()
            continue
        resp.read()
        resp.release()
        return endpoint.host
    raise AssertionError("no endpoint answered")


def test_a_name_with_several_addresses_uses_them_all(backends: list[Backend]) -> None:
    dns = {"storage": [b.server.server_address[0] for b in backends[:2]]}
    port = backends[0].server.server_address[1]
    endpoints = Endpoints("storage", [f"http://storage:{port}"], make_pool,
                          resolver=lambda host, _: list(dns[host]))
    assert [e.host for e in endpoints.endpoints] == dns["storage"]
    hosts = [get(endpoints) for _ in range(10)]
    assert set(hosts) == set(dns["storage"])

    # A third replica appears; one leaves.
    dns["storage"] = [b.server.server_address[0] for b in backends[1:]]
    endpoints.refresh()
    assert [e.host for e in endpoints.endpoints] == dns["storage"]
    assert set(get(endpoints) for _ in range(10)) == set(dns["storage"])

    # A failed lookup keeps what is known.
    def broken(host: str, port: int) -> list[str]:
        raise OSError("no DNS")

    endpoints._resolver = broken
    endpoints.refresh()
    assert [e.host for e in endpoints.endpoints] == dns["storage"]


def test_literal_addresses_and_real_lookups() -> None:
    assert "127.0.0.1" in discovery.resolve("localhost", 80)
    endpoints = Endpoints("one", ["http://127.0.0.1:9", "http://[::1]:9"], make_pool)
    assert [e.url for e in endpoints.endpoints] == ["http://127.0.0.1:9", "http://[::1]:9"]


def test_a_name_that_never_resolved_is_kept_as_itself() -> None:
    def nothing(host: str, port: int) -> list[str]:
        raise OSError("NXDOMAIN")

    endpoints = Endpoints("index", ["http://index.invalid:5200"], make_pool, resolver=nothing)
    assert [e.host for e in endpoints.endpoints] == ["index.invalid"]


def test_unhealthy_and_refusing_backends_leave_and_come_back(
        backends: list[Backend]) -> None:
    hosts = [b.server.server_address[0] for b in backends]
    port = backends[0].server.server_address[1]
    endpoints = Endpoints("storage", [f"http://{h}:{port}" for h in hosts], make_pool)
    sick = backends[0]
    sick.ready = 503
    endpoints.check_health()
    assert [e.up for e in endpoints.endpoints] == [False, True, True]
    before = sick.hits
    for _ in range(12):
        get(endpoints)
    assert sick.hits == before, "an unhealthy backend was chosen while others were up"
    # Passed over, not skipped: alone, it is still tried.
    assert endpoints.order()[-1].host == hosts[0]
    sick.ready = 200
    endpoints.check_health()
    assert all(e.up for e in endpoints.endpoints)

    # A backend that refuses connections is passed over for DOWN_SECONDS.
    backends[1].close()
    endpoints.endpoints[1].pool.close()  # its kept-alive connections outlive the listener
    for _ in range(6):
        get(endpoints)
    assert not endpoints.endpoints[1].up
    time.sleep(discovery.DOWN_SECONDS + 0.1)
    assert endpoints.endpoints[1].up


def test_the_background_thread_follows_changes(backends: list[Backend]) -> None:
    dns = {"svc": [backends[0].server.server_address[0]]}
    port = backends[0].server.server_address[1]
    endpoints = Endpoints("svc", [f"http://svc:{port}"], make_pool, interval=0.1,
                          health_interval=0.05, resolver=lambda host, _: list(dns[host]))
    endpoints.start()
    try:
        dns["svc"] = [b.server.server_address[0] for b in backends]
        backends[2].ready = 503
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = [(e.host, e.up) for e in endpoints.endpoints]
            if len(states) == 3 and states[2][1] is False:
                break
            time.sleep(0.05)
        assert [e.host for e in endpoints.endpoints] == dns["svc"]
        assert [e.up for e in endpoints.endpoints] == [True, True, False]
    finally:
        endpoints.stop()
