"""The services' own ports under `dockyard serve`: only calls signed with the secret
`serve` generated are answered; a forged hand-over or an outsider's RPC gets 401 and
changes nothing on disk or in Redis."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest

from shared.rpc import RpcClient, RpcError
from shared.service_auth import SECRET_FILE_NAME, ServiceKey
from tests.integration.helpers import direct, service_url, storage_root, unique_repo
from tests.support.processes import VENV_BIN, Dockyard, free_port
from tests.support.registry_client import RegistryClient, sha256


def test_serve_generates_a_private_secret(dockyard: Dockyard) -> None:
    path = dockyard.data_dir / SECRET_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    # Children get the file's name, never the secret itself, in their environment.
    secret = path.read_text().strip()
    for service in ("router", "storage", "index"):
        child = dockyard.child(service)
        assert secret not in " ".join(child.cmdline())
        assert secret not in " ".join(child.environ().values())


def test_unsigned_calls_to_storage_are_refused_and_touch_nothing(
        dockyard: Dockyard, client: RegistryClient) -> None:
    repo = unique_repo("auth")
    digest, _ = client.push_image(repo, "v1")
    blob = client.push_blob(repo, b"secret layer")
    storage = service_url(dockyard, "storage")
    root = storage_root(dockyard)
    spool = root / "tmp" / ("spool-" + os.urandom(16).hex())
    spool.write_bytes(b"forged")
    blobs_before = sorted(p.name for p in (root / "blobs").rglob("*"))
    outsider = ServiceKey("not-the-secret-of-this-dockyard")

    attempts = [
        ("GET", f"/v2/{repo}/blobs/{blob}", {}),
        ("GET", f"/v2/{repo}/blobs/{blob}", {"X-Dockyard-Accel": "file"}),
        ("GET", f"/v2/{repo}/manifests/v1", {}),
        ("DELETE", f"/v2/{repo}/manifests/{digest}", {}),
        ("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(b'forged')}",
         {"X-Dockyard-Body-File": spool.name, "X-Dockyard-Body-Length": "6"}),
    ]
    for method, path, headers in attempts:
        for signer in (None, outsider):
            r = direct(method, storage + path, headers=headers, signer=signer)
            assert r.status == 401, (method, path, r.status)
            assert "X-Dockyard-File" not in r.headers
    assert spool.read_bytes() == b"forged"
    assert sorted(p.name for p in (root / "blobs").rglob("*")) == blobs_before
    assert client.get_manifest(repo, "v1").status == 200
    assert client.request("GET", f"/v2/{repo}/blobs/{blob}").data == b"secret layer"
    spool.unlink()


def test_an_outsiders_rpc_to_the_index_is_refused(dockyard: Dockyard,
                                                  client: RegistryClient) -> None:
    repo = unique_repo("auth")
    digest, _ = client.push_image(repo, "v1")
    index = service_url(dockyard, "index")
    forged = RpcClient([index], signer=ServiceKey("not-the-secret-of-this-dockyard"))
    with pytest.raises(RpcError) as e:
        forged.call("delete_tag", {"repo": repo, "tag": "v1"})
    assert e.value.status == 401
    r = direct("POST", index + "/internal/rpc/delete_tag",
               body=msgpack.packb({"repo": repo, "tag": "v1"}),
               headers={"Content-Type": "application/msgpack"})
    assert r.status == 401
    assert direct("GET", index + f"/v2/{repo}/tags/list").status == 401
    assert client.request("GET", f"/v2/{repo}/tags/list").status == 200
    assert client.get_manifest(repo, "v1").headers["Docker-Content-Digest"] == digest

    # With this dockyard's own secret, the very same call works.
    real = RpcClient([index], signer=dockyard.service_key())
    assert real.call("resolve_tag", {"repo": repo, "tag": "v1"}) == {"digest": digest}


def test_a_captured_call_cannot_be_replayed(dockyard: Dockyard, client: RegistryClient,
                                            ) -> None:
    repo = unique_repo("auth")
    client.push_image(repo, "v1")
    host, port = service_url(dockyard, "index")[len("http://"):].split(":")
    body = msgpack.packb({"repo": repo, "tag": "v1"})
    path = "/internal/rpc/resolve_tag"
    signature = dockyard.service_key().sign("POST", path, [], body)
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
               f"X-Dockyard-Signature: {signature}\r\nConnection: close\r\n\r\n"
               ).encode() + body
    answers = []
    for _ in range(2):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        answers.append(data.split(b" ", 2)[1])
    assert answers == [b"200", b"401"]


def test_health_and_metrics_of_the_services_are_open(dockyard: Dockyard) -> None:
    for service in ("storage", "index"):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert direct("GET", service_url(dockyard, service) + path).status == 200


@pytest.mark.parametrize("service", ["storage", "index", "router"])
def test_a_service_without_the_secret_refuses_to_start(service: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    result = subprocess.run(
        [str(VENV_BIN / "dockyard"), service, "--listen", f"127.0.0.1:{free_port()}",
         *(["--root", str(tmp_path / "root")] if service == "storage" else [])],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "internal.secret: not set" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
