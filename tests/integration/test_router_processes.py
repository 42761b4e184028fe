"""`dockyard serve` with several router processes on one public port.

They accept from one listening socket the supervisor holds, each keeps its
own response cache (kept honest by index events, and by the write fence for
this machine's own writes), and /metrics adds up all of them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import urllib3

from tests.integration.helpers import OCI_MANIFEST, direct, router_metrics_url, unique_repo
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import RegistryClient

PROCESSES = 3


@pytest.fixture
def multi(tmp_path: Path) -> Dockyard:
    config = tmp_path / "dockyard.yml"
    config.write_text(f"router:\n  processes: {PROCESSES}\nlog:\n  access: false\n")
    server = Dockyard(tmp_path / "data", config=config).start()
    yield server
    server.stop()


def _fresh_connection_get(url: str, headers: dict[str, str] | None = None
                          ) -> urllib3.BaseHTTPResponse:
    # A new connection for each request: the kernel hands it to any router process.
    with urllib3.PoolManager(retries=False, timeout=30) as http:
        return http.request("GET", url, headers=headers or {})


def test_every_router_process_takes_connections(multi: Dockyard) -> None:
    routers = multi.children("router")
    assert len(routers) == PROCESSES
    port = multi.port
    held = []
    for _ in range(60):
        conn = urllib3.HTTPConnectionPool(multi.host, port, maxsize=1, retries=False)
        assert conn.request("GET", "/v2/").status == 200
        held.append(conn)
    serving = {p.pid for p in routers
               if any(c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
                      for c in p.net_connections("tcp"))}
    assert len(serving) >= 2, f"only {len(serving)} of {PROCESSES} routers took connections"
    for conn in held:
        conn.close()


def test_a_write_is_read_back_through_any_router_process(multi: Dockyard) -> None:
    # The index's event usually wins this race too (it is milliseconds wide);
    # tests/unit/test_write_fence.py checks the fence that closes it.
    client = RegistryClient(multi.url)
    name = unique_repo("multi")
    url = f"{multi.url}/v2/{name}/manifests/latest"
    accept = {"Accept": OCI_MANIFEST}
    for round_no in range(8):
        digest, _ = client.push_image(name, "latest")
        # Fill every process's cache with this answer, then move the tag.
        for _ in range(3 * PROCESSES):
            assert _fresh_connection_get(url, accept).headers["Docker-Content-Digest"] == digest
        moved, _ = client.push_image(name, "latest")
        seen = [_fresh_connection_get(url, accept).headers["Docker-Content-Digest"]
                for _ in range(3 * PROCESSES)]
        assert seen == [moved] * len(seen), f"round {round_no}: a router served the old tag"


def test_metrics_add_up_every_router_process(multi: Dockyard) -> None:
    requests = 90
    for _ in range(requests):
        assert _fresh_connection_get(f"{multi.url}/v2/").status == 200
    text = direct("GET", router_metrics_url(multi)).data.decode()
    total = sum(float(v) for v in re.findall(
        r'dockyard_http_requests_total\{[^}]*method="GET"[^}]*status="200"[^}]*\} (\S+)', text))
    assert total >= requests


def test_killed_router_process_leaves_the_others_serving(multi: Dockyard) -> None:
    victim = multi.children("router")[0]
    statuses: list[int | str] = []
    stop = threading.Event()

    def poll() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                statuses.append(_fresh_connection_get(f"{multi.url}/v2/").status)
            except Exception as e:  # a failed request is the result to report
                statuses.append(type(e).__name__)
            time.sleep(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.3)
    victim.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = {p.pid for p in multi.children("router")}
        if len(pids) == PROCESSES and victim.pid not in pids:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    thread.join(10)
    assert len({p.pid for p in multi.children("router")} - {victim.pid}) == PROCESSES
    # Connections already accepted by the killed process may fail; new ones must not.
    failures = [s for s in statuses if s != 200]
    assert len(failures) <= 1, failures
    assert statuses.count(200) > 20


def test_a_second_serve_on_a_taken_port_fails_at_once(tmp_path: Path) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        started = time.monotonic()
        out = subprocess.run([str(VENV_BIN / "dockyard"), "serve", "--port", str(port),
                              "--data-dir", str(tmp_path / "data")],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
        assert "Traceback" not in out.stderr
        assert time.monotonic() - started < 15
    finally:
        holder.close()
