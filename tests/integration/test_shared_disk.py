"""Under `serve` the router shares storage's disk: large upload bodies are handed
over as files in tmp/ and taken by rename, not sent again over a socket."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from tests.integration.helpers import direct, service_url, storage_root, wait_until
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256

# Larger than waitress's in-memory request buffer (4 MiB), so it is spooled.
SIZE = 12 * 1024 * 1024

# The hand-over and direct reads are what a shared filesystem allows.
pytestmark = pytest.mark.filesystem_only


def _storage_bytes_in(dockyard: Dockyard) -> float:
    text = direct("GET", service_url(dockyard, "storage") + "/metrics").data.decode()
    m = re.search(r'^dockyard_http_request_bytes_total\{service="storage"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _spools(dockyard: Dockyard) -> list[str]:
    return [n for n in os.listdir(storage_root(dockyard) / "tmp") if n.startswith("spool-")]


def test_streamed_push_is_handed_over_not_resent(dockyard: Dockyard, client: RegistryClient,
                                                 repo: str) -> None:
    data = os.urandom(SIZE)
    digest = sha256(data)
    before = _storage_bytes_in(dockyard)
    location = client.start_upload(repo)

    def chunks():
        for i in range(0, SIZE, 1 << 20):
            yield data[i:i + (1 << 20)]

    r = client.request("PATCH", location, body=chunks(), chunked=True)
    assert r.status == 202, r.data
    assert r.headers["Range"] == f"0-{SIZE - 1}"
    # A second chunk goes into the same session by copy, after the adopted first one.
    tail = os.urandom(SIZE)
    r = client.request("PATCH", r.headers["Location"], body=tail,
                       headers={"Content-Range": f"{SIZE}-{2 * SIZE - 1}"})
    assert r.status == 202, r.data
    r = client.request("PUT", r.headers["Location"] + "?digest=" + sha256(data + tail))
    assert r.status == 201, r.data
    assert client.request("GET", f"/v2/{repo}/blobs/{sha256(data + tail)}").data == data + tail
    # Storage received headers only: the bytes came by rename.
    assert _storage_bytes_in(dockyard) - before < SIZE
    wait_until(lambda: not _spools(dockyard), timeout=5, what="spool files removed")
    # The first chunk alone never became a blob.
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 404


def test_spooled_body_with_wrong_digest_leaves_nothing(dockyard: Dockyard,
                                                        client: RegistryClient,
                                                        repo: str) -> None:
    data = os.urandom(SIZE)
    wrong = sha256(b"something else")
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={wrong}", body=data)
    assert r.status == 400
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert client.request("HEAD", f"/v2/{repo}/blobs/{wrong}").status == 404
    assert client.request("HEAD", f"/v2/{repo}/blobs/{sha256(data)}").status == 404
    wait_until(lambda: not _spools(dockyard), timeout=5, what="spool files removed")


def test_large_pulls_are_whole_from_the_shared_disk(dockyard: Dockyard, client: RegistryClient,
                                                    repo: str) -> None:
    """The router sends a blob from the file with sendfile(2), a socket buffer at a
    time: whole, from an offset (Range), and to a client that reads slowly."""
    data = os.urandom(SIZE)
    digest = sha256(data)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data)
    assert r.status == 201, r.data
    path = f"/v2/{repo}/blobs/{digest}"
    assert client.request("GET", path).data == data
    start = SIZE // 3 + 7
    r = client.request("GET", path, headers={"Range": f"bytes={start}-{SIZE - 2}"})
    assert r.status == 206
    assert r.data == data[start:SIZE - 1]

    # A slow reader: the socket fills, sendfile sends part, and the rest follows later.
    host, port = client.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        received = bytearray()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            chunk = s.recv(32 * 1024)
            if not chunk:
                break
            received += chunk
            if len(received) < 2 * 1024 * 1024:
                time.sleep(0.002)
            head, sep, body = bytes(received).partition(b"\r\n\r\n")
            if sep and len(body) >= SIZE:
                break
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == data
