"""`dockyard serve` as a supervisor: children restarted fast without disturbing the
others, upload sessions surviving a storage restart, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import psutil

from tests.integration.helpers import direct, service_url, wait_until
from tests.integration.test_drain import push_across_a_stop
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256


class Poller:
    """Repeats one request in a thread and keeps every status, to prove a service
    kept answering while another one was down."""

    def __init__(self, request: Callable[[], int]) -> None:
        self._request = request
        self._stop = threading.Event()
        self.statuses: list[int | str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 30  # a guard; the test stops it long before
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.statuses.append(self._request())
            except Exception as e:  # a failed request is a result to report
                self.statuses.append(type(e).__name__)
            time.sleep(0.01)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def ready(url: str) -> bool:
    try:
        return direct("GET", url + "/readyz", timeout=0.5).status == 200
    except Exception:
        return False


def restart_budget() -> float:
    """The 2 s a restart may take, stretched only while the machine is oversubscribed.

    A restart is a fresh Python process importing its modules; with more runnable
    processes than CPUs (other suites, benchmarks) it waits for a CPU, which
    says nothing about the supervisor.
    """
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return 2.0 * min(max(1.0, load), 5.0)


def kill_and_time_recovery(dockyard: Dockyard, service: str) -> float:
    """SIGKILL a child; return the seconds until its replacement is ready."""
    url = service_url(dockyard, service)
    old = dockyard.child(service)
    started = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    wait_until(lambda: ready(url), timeout=10, interval=0.02, what=f"{service} ready")
    elapsed = time.monotonic() - started
    assert dockyard.child(service).pid != old.pid
    return elapsed


def test_index_killed_is_back_within_2s_and_storage_keeps_serving(
        fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.start()
    client = RegistryClient(fresh_dockyard.url, timeout=5)
    name = "sup/index"
    digest, data = client.random_blob(name, 4096)

    def pull() -> int:
        r = client.request("GET", f"/v2/{name}/blobs/{digest}")
        assert r.data == data
        return r.status

    with Poller(pull) as poller:
        elapsed = kill_and_time_recovery(fresh_dockyard, "index")
        time.sleep(0.2)
    budget = restart_budget()
    assert elapsed < budget, f"index took {elapsed:.2f}s to come back (budget {budget:.1f}s)"
    assert len(poller.statuses) > 10
    assert set(poller.statuses) == {200}, poller.statuses
    # The registry as a whole is ready again.
    assert client.request("GET", "/readyz").status == 200
    assert client.request("GET", f"/v2/{name}/tags/list").status in (200, 404)


def test_storage_killed_is_back_within_2s_and_index_keeps_serving(
        fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.start()
    client = RegistryClient(fresh_dockyard.url, timeout=5)
    name = "sup/storage"
    body = client.image_manifest(name)
    assert client.put_manifest(name, "v1", body).status == 201

    def tags() -> int:
        r = client.request("GET", f"/v2/{name}/tags/list")
        assert r.data == b'{"name": "sup/storage", "tags": ["v1"]}'
        return r.status

    with Poller(tags) as poller:
        elapsed = kill_and_time_recovery(fresh_dockyard, "storage")
        time.sleep(0.2)
    budget = restart_budget()
    assert elapsed < budget, f"storage took {elapsed:.2f}s to come back (budget {budget:.1f}s)"
    assert len(poller.statuses) > 10
    assert set(poller.statuses) == {200}, poller.statuses
    assert client.get_manifest(name, "v1").data == body


def test_upload_session_survives_a_storage_restart(fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.start()
    client = RegistryClient(fresh_dockyard.url, timeout=10)
    name = "sup/upload"
    data = os.urandom(300_000)
    location = client.start_upload(name)
    r = client.request("PATCH", location, body=data[:100_000],
                       headers={"Content-Range": "0-99999"})
    assert r.status == 202
    location = r.headers["Location"]

    old = fresh_dockyard.kill("storage")
    fresh_dockyard.wait_restarted("storage", old)

    r = client.request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == "0-99999"
    r = client.request("PATCH", location, body=data[100_000:200_000],
                       headers={"Content-Range": "100000-199999"})
    assert r.status == 202, r.data
    # The new process never saw the first chunk: it must hash from the file.
    r = client.request("PUT", f"{r.headers['Location']}?digest={sha256(data)}",
                       body=data[200_000:])
    assert r.status == 201, r.data
    assert client.request("GET", f"/v2/{name}/blobs/{sha256(data)}").data == data


def test_sigterm_stops_every_child_without_orphans(fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.start()
    assert fresh_dockyard.process is not None
    parent = psutil.Process(fresh_dockyard.process.pid)
    children = parent.children(recursive=True)
    expected = {p.pid for s in ("router", "storage", "index", "redis")
                for p in fresh_dockyard.children(s)}
    assert {c.pid for c in children} == expected

    started = time.monotonic()
    fresh_dockyard.process.send_signal(signal.SIGTERM)
    fresh_dockyard.process.wait(10)
    elapsed = time.monotonic() - started
    assert fresh_dockyard.process.returncode == 0
    assert elapsed < 6.0, f"serve took {elapsed:.1f}s to stop"
    _, alive = psutil.wait_procs(children, timeout=2)
    assert alive == [], [p.pid for p in alive]
    assert not ready(fresh_dockyard.url)


def test_stop_lets_an_upload_in_flight_finish_past_the_old_5s_grace(
        fresh_dockyard: Dockyard) -> None:
    """`dockyard serve` stopping gives its children their drain deadline
    (http.drain_timeout), routers first, so a push in flight through the router
    completes even when it takes longer than a fixed few seconds."""
    fresh_dockyard.env = {"DOCKYARD_HTTP_DRAIN_TIMEOUT": "20"}
    fresh_dockyard.start()
    assert fresh_dockyard.process is not None
    busy = socket.create_connection((fresh_dockyard.host, fresh_dockyard.port))
    push_across_a_stop(fresh_dockyard.process, busy, fresh_dockyard.addr, "drain/serve")
