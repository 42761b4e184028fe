"""No acknowledged push loses its webhook: kill -9 of the dispatcher, of the index and
of Redis in the middle of a burst of 500 pushes, a restart of the whole deployment
while the endpoint is down, and several dispatchers sharing one endpoint.

Delivery is at least once: a dispatcher killed between the endpoint's 2xx and its
acknowledgement in Redis sends those events again, with the same ids. The tests
count such duplicates and require that none differs from the original."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.integration.helpers import wait_until
from tests.support.processes import VENV_BIN, Dockyard, wait_http
from tests.support.registry_client import RegistryClient
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import ManifestPusher, deployment, events_cli, redis_url

BURST = 500


def _burst(pusher: ManifestPusher, count: int,
           at: dict[int, Callable[[], None]]) -> tuple[list[str], list[bytes]]:
    """Push `count` manifests, running at[n] in a thread before push n; returns the
    digests acknowledged (201) and the bodies refused or failed."""
    acked: list[str] = []
    refused: list[bytes] = []
    threads = []
    for n in range(count):
        if n in at:
            threads.append(threading.Thread(target=at[n]))
            threads[-1].start()
        try:
            status, digest, body = pusher.push(n)
        except urllib3.exceptions.HTTPError:
            refused.append(pusher.body(n))
            continue
        if status == 201:
            acked.append(digest)
        else:
            assert status == 503, status
            refused.append(body)
    for t in threads:
        t.join(60)
    return acked, refused


def _all_delivered(receiver: Receiver, repo: str, digests: list[str],
                   timeout: float) -> dict[str, Any]:
    wanted = set(digests)

    def seen() -> set[str]:
        return {e["target"]["digest"] for e in receiver.delivered()
                if e["target"].get("repository") == repo and e["action"] == "push"}

    wait_until(lambda: wanted <= seen(), timeout,
               what=f"all {len(wanted)} acknowledged pushes delivered")
    events = [e for e in receiver.delivered() if e["target"].get("repository") == repo]
    by_id: dict[str, dict[str, Any]] = {}
    for e in events:
        # A duplicate is the very same event again, never a new one.
        assert by_id.setdefault(e["id"], e) == e
    per_digest: dict[str, set[str]] = {}
    for e in by_id.values():
        per_digest.setdefault(e["target"]["digest"], set()).add(e["id"])
    assert all(len(ids) == 1 for ids in per_digest.values()), "one push, one event id"
    return {"events": len(events), "unique": len(by_id), "duplicates": len(events) - len(by_id)}


def _kill(server: Dockyard, service: str) -> Callable[[], None]:
    return lambda: server.kill(service)


@pytest.fixture
def receiver() -> Any:
    r = Receiver(stall=0.01).start()
    yield r
    r.stop()


def _endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "hook", "url": url, "timeout": 1, "batch_size": 10,
            "backoff_initial": 0.1, "backoff_max": 1, **extra}


def test_dispatcher_killed_twice_in_a_burst_of_500(tmp_path: Path, receiver: Receiver) -> None:
    server = deployment(tmp_path, [_endpoint(receiver.url)], claim_idle=2).start()
    try:
        pusher = ManifestPusher(RegistryClient(server.url), "durable/dispatcher")
        acked, refused = _burst(pusher, BURST, {100: _kill(server, "notifications"),
                                                300: _kill(server, "notifications")})
        assert len(acked) == BURST and not refused  # the registry never noticed
        counts = _all_delivered(receiver, pusher.repo, acked, 120)
        print("dispatcher kills:", counts)
        assert server.log_text().count("notifications (pid") >= 2  # both kills restarted it
    finally:
        server.stop()


@pytest.mark.parametrize("service", ["index", "redis"])
def test_index_or_redis_killed_in_a_burst_of_500(tmp_path: Path, receiver: Receiver,
                                                 service: str) -> None:
    """Pushes are refused while the index (or its Redis) is down; every push that was
    acknowledged, before or after, is delivered."""
    server = deployment(tmp_path, [_endpoint(receiver.url)], claim_idle=2)
    server.env = {"DOCKYARD_STORAGE_RPC_TIMEOUT": "1", "DOCKYARD_ROUTER_BACKEND_TIMEOUT": "2"}
    server.start()
    try:
        pusher = ManifestPusher(RegistryClient(server.url), f"durable/{service}")
        acked, refused = _burst(pusher, BURST, {150: _kill(server, service)})
        assert acked and len(acked) + len(refused) == BURST
        counts = _all_delivered(receiver, pusher.repo, acked, 120)
        print(f"{service} kill:", counts, "refused pushes:", len(refused))
    finally:
        server.stop()


def test_a_restart_of_everything_delivers_what_was_pending(tmp_path: Path) -> None:
    down = Receiver().start()
    port, url = down.port, down.url
    down.stop()  # the endpoint is down throughout the first run
    server = deployment(tmp_path, [_endpoint(url)], claim_idle=2).start()
    pusher = ManifestPusher(RegistryClient(server.url), "durable/restart")
    acked, _ = _burst(pusher, 30, {})
    assert len(acked) == 30
    wait_until(lambda: "connection refused" in server.log_text(), 15, what="a failed POST")
    server.stop()

    up = Receiver().start(port)
    try:
        server.start()
        counts = _all_delivered(up, pusher.repo, acked, 60)
        print("full restart:", counts)
        # Delivered events leave the stream (trimmed every few seconds).
        wait_until(lambda: "stream: 0 events retained" in events_cli(server, "status").stdout,
                   20, interval=1, what="the stream trimmed")
    finally:
        server.stop()
        up.stop()


def test_several_dispatchers_share_an_endpoint(tmp_path: Path) -> None:
    receiver = Receiver(stall=0.05).start()
    server = deployment(tmp_path, [_endpoint(receiver.url, batch_size=5)], claim_idle=2).start()
    extra = []
    try:
        wait_http(server.url + "/readyz")
        for i in range(2):
            log = open(tmp_path / f"dispatcher-{i}.log", "wb")  # noqa: SIM115 (closed below)
            extra.append((subprocess.Popen(
                [str(VENV_BIN / "dockyard"), "notifications", "--config", str(server.config),
                 "--redis-url", redis_url(server), "--consumer", f"extra-{i}"],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)), log))
        pusher = ManifestPusher(RegistryClient(server.url), "durable/shared")
        acked, _ = _burst(pusher, 200, {})
        counts = _all_delivered(receiver, pusher.repo, acked, 60)
        # Nobody failed or was killed: each event reached the endpoint exactly once.
        assert counts["duplicates"] == 0, counts
    finally:
        for proc, log in extra:
            proc.terminate()
            proc.wait(15)
            log.close()
        server.stop()
        receiver.stop()
    busy = [i for i in range(2)
            if "delivered" in (tmp_path / f"dispatcher-{i}.log").read_text()]
    assert busy, "the extra dispatchers never delivered anything"


def test_another_dispatcher_takes_over_what_a_dead_one_had_taken(tmp_path: Path) -> None:
    """A dispatcher killed for good (its consumer name never comes back): the events it
    had taken are claimed by the one under `serve` once idle for claim_idle seconds."""
    receiver = Receiver(stall=0.2).start()
    server = deployment(tmp_path, [_endpoint(receiver.url, batch_size=5)],
                        claim_idle=2).start()
    log = open(tmp_path / "doomed.log", "wb")  # noqa: SIM115 (closed below)
    doomed = subprocess.Popen(
        [str(VENV_BIN / "dockyard"), "notifications", "--config", str(server.config),
         "--redis-url", redis_url(server), "--consumer", "doomed"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        pusher = ManifestPusher(RegistryClient(server.url), "durable/takeover")
        wait_until(lambda: "delivering to 1 endpoints" in (tmp_path / "doomed.log").read_text(),
                   20, what="the extra dispatcher up")
        # Killed in the middle of the burst: with every POST taking 0.2 s, it is
        # holding a batch it took.
        acked, _ = _burst(pusher, 60, {30: doomed.kill})
        doomed.wait(10)
        counts = _all_delivered(receiver, pusher.repo, acked, 60)
        print("takeover:", counts)
        assert "took over" in server.log_text(), "nothing was left pending: proved nothing"
    finally:
        if doomed.poll() is None:
            doomed.kill()
        log.close()
        server.stop()
        receiver.stop()
