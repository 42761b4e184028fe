"""HTTPS on the public endpoint (services/tls.py): `dockyard serve` with a certificate
from a CA the test makes, its renewal served without a restart, plain HTTP on the TLS
port refused, and client certificates when a client CA is configured."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.integration.helpers import unique_repo, wait_until
from tests.support.processes import VENV_BIN, Dockyard, free_port
from tests.support.registry_client import RegistryClient, sha256
from tests.support.tls_certs import TestCA, serial_of

pytestmark = pytest.mark.skipif(shutil.which("haproxy", path="/usr/sbin:/usr/bin") is None
                                and shutil.which("haproxy") is None,
                                reason="haproxy is not installed")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


def write_config(path: Path, cert: Path, key: Path, **extra: str) -> Path:
    lines = ["tls:", f"  cert: {cert}", f"  key: {key}", "  reload_interval: 0.3"]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tls_dockyard(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[Dockyard]:
    base = tmp_path_factory.mktemp("tls")
    cert, key = ca.issue("server")
    live_cert, live_key = base / "live.crt", base / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    config = write_config(base / "dockyard.yml", live_cert, live_key)
    with Dockyard(base / "data", config=config, ca_certs=ca.ca_path) as server:
        yield server


def https_client(d: Dockyard, ca: TestCA) -> RegistryClient:
    client = RegistryClient(d.url)
    client.http = urllib3.PoolManager(retries=False, timeout=30.0, ca_certs=str(ca.ca_path))
    return client


def served_serial(d: Dockyard, ca: TestCA, server_name: str = "localhost") -> int:
    ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    with socket.create_connection((d.host, d.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


def replace(src: Path, dst: Path) -> None:
    """Install a file the way certbot and friends do: write beside it, then rename."""
    tmp = dst.with_suffix(".new")
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def test_push_and_pull_over_https(tls_dockyard: Dockyard, ca: TestCA) -> None:
    client = https_client(tls_dockyard, ca)
    repo = unique_repo("tls")
    _, body = client.push_image(repo, "v1")
    r = client.get_manifest(repo, "v1")
    assert r.status == 200 and r.data == body
    blob = client.push_blob(repo, os.urandom(3 * 1024 * 1024))
    r = client.request("GET", f"/v2/{repo}/blobs/{blob}", preload_content=False)
    assert sha256(r.read()) == blob

    # Location headers name the https URL, whatever a client claims about its scheme.
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/",
                       headers={"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil:1"})
    assert r.status == 202
    location = r.headers["Location"]
    assert location.startswith(f"https://{tls_dockyard.addr}/") or location.startswith("/")

    # The certificate is checked: a client that does not trust the CA gets no answer.
    untrusting = urllib3.PoolManager(retries=False, timeout=5.0)
    with pytest.raises(urllib3.exceptions.SSLError):
        untrusting.request("GET", tls_dockyard.url + "/v2/")


def test_plain_http_on_the_tls_port_is_refused_cleanly(tls_dockyard: Dockyard,
                                                      ca: TestCA) -> None:
    before = tls_dockyard.log_text().count("GET /v2/_catalog?plain")
    start = time.monotonic()
    with socket.create_connection((tls_dockyard.host, tls_dockyard.port), timeout=5) as s:
        s.sendall(b"GET /v2/_catalog?plain HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    # Closed at once, with at most a TLS alert: no HTTP answer, and nothing forwarded.
    assert time.monotonic() - start < 3
    assert not data.startswith(b"HTTP/"), data[:100]
    assert data == b"" or data[0] == 0x15, data[:100]  # 0x15: a TLS alert record
    time.sleep(0.3)
    assert tls_dockyard.log_text().count("GET /v2/_catalog?plain") == before
    assert https_client(tls_dockyard, ca).request("GET", "/v2/").status == 200


def test_a_renewed_certificate_is_served_without_a_restart(
        tls_dockyard: Dockyard, ca: TestCA) -> None:
    client = https_client(tls_dockyard, ca)
    repo = unique_repo("tls")
    data = os.urandom(24 * 1024 * 1024)
    blob = client.push_blob(repo, data)
    base = tls_dockyard.config.parent  # type: ignore[union-attr]
    live_cert, live_key = base / "live.crt", base / "live.key"
    old = served_serial(tls_dockyard, ca)
    pids = {s: tls_dockyard.child(s).pid for s in ("router", "storage", "index")}

    # A download under way on the old certificate, and a steady stream of requests.
    download = client.request("GET", f"/v2/{repo}/blobs/{blob}", preload_content=False)
    first = download.read(1024 * 1024)
    failures: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        poller = https_client(tls_dockyard, ca)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                statuses.append(poller.request("GET", "/v2/").status)
                # A new connection each second request: handshakes during the reload too.
                if len(statuses) % 2:
                    poller.http.clear()
            except Exception as e:  # every failure is reported
                failures.append(repr(e))
            time.sleep(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        # Half-renewed (the certificate, not its key yet): the old pair stays in service.
        new_cert, new_key = ca.issue("renewed")
        replace(new_cert, live_cert)
        time.sleep(1.5)
        assert served_serial(tls_dockyard, ca) == old
        assert "renewed TLS certificate not usable yet" in tls_dockyard.log_text()
        replace(new_key, live_key)
        new = serial_of(new_cert.read_bytes())
        wait_until(lambda: served_serial(tls_dockyard, ca) == new, timeout=10,
                   what="the renewed certificate served")
    finally:
        time.sleep(0.5)
        stop.set()
        thread.join(10)
    rest = download.read()
    download.release_conn()
    assert sha256(first + rest) == blob
    assert not failures, failures[:5]
    assert statuses and set(statuses) == {200}
    assert {s: tls_dockyard.child(s).pid for s in pids} == pids
    assert "reloading haproxy" in tls_dockyard.log_text()


def test_client_certificates_when_a_client_ca_is_set(tmp_path: Path, ca: TestCA) -> None:
    cert, key = ca.issue("server-mtls")
    client_cert, client_key = ca.issue("client", names=("ci-robot",), client=True)
    config = write_config(tmp_path / "dockyard.yml", cert, key, client_ca=str(ca.ca_path))
    d = Dockyard(tmp_path / "data", config=config)
    # Started without waiting for /readyz over plain HTTPS: that needs a client certificate.
    d.ca_certs = None
    argv = [str(VENV_BIN / "dockyard"), "serve", "--port", str(d.port), "--data-dir",
            str(d.data_dir), "--config", str(config)]
    with open(tmp_path / "serve.log", "ab") as log:
        d.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        with_cert = urllib3.PoolManager(retries=False, timeout=2.0, ca_certs=str(ca.ca_path),
                                        cert_file=str(client_cert), key_file=str(client_key))
        url = f"https://127.0.0.1:{d.port}"

        def ready() -> bool:
            try:
                return with_cert.request("GET", url + "/readyz").status == 200
            except urllib3.exceptions.HTTPError:
                return False

        wait_until(ready, timeout=30, what="dockyard over mutual TLS")
        assert with_cert.request("GET", url + "/v2/").status == 200
        without = urllib3.PoolManager(retries=False, timeout=2.0, ca_certs=str(ca.ca_path))
        with pytest.raises(urllib3.exceptions.HTTPError):
            without.request("GET", url + "/v2/")
    finally:
        d.stop()


def test_a_key_that_does_not_match_stops_serve_with_a_clear_error(tmp_path: Path,
                                                                  ca: TestCA) -> None:
    cert, _ = ca.issue("one")
    _, other_key = ca.issue("two")
    result = subprocess.run(
        [str(VENV_BIN / "dockyard"), "serve", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data"), "--tls-cert", str(cert), "--tls-key", str(other_key)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "TLS certificate and key" in result.stderr
    result = subprocess.run(
        [str(VENV_BIN / "dockyard"), "serve", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data"), "--tls-cert", str(cert)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--tls-key" in result.stderr


def test_the_data_dir_keeps_the_key_private(tls_dockyard: Dockyard) -> None:
    pem = tls_dockyard.data_dir / "tls" / "server.pem"
    assert pem.stat().st_mode & 0o077 == 0
    assert (tls_dockyard.data_dir / "tls").stat().st_mode & 0o077 == 0
    assert hashlib.sha256(pem.read_bytes()).hexdigest()  # readable by dockyard itself


def test_stopping_serve_lets_an_https_push_in_flight_finish(tmp_path: Path, ca: TestCA) -> None:
    """haproxy is stopped softly (SIGUSR1), before the routers: an HTTPS upload in
    flight when `serve` gets SIGTERM completes, past the old fixed 5 s grace."""
    from tests.integration.test_drain import push_across_a_stop

    cert, key = ca.issue("server-drain")
    with Dockyard(tmp_path / "data", config=write_config(tmp_path / "dockyard.yml", cert, key),
                  ca_certs=ca.ca_path, env={"DOCKYARD_HTTP_DRAIN_TIMEOUT": "20"}) as d:
        assert d.process is not None
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        busy = ctx.wrap_socket(socket.create_connection((d.host, d.port), timeout=30),
                               server_hostname="localhost")
        push_across_a_stop(d.process, busy, f"localhost:{d.port}", unique_repo("drain"))
