"""Each configurable limit applies: request header size, manifest size, idle
timeout, concurrent upload sessions per repository, and upload session age."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import msgpack
import pytest

from services.storage.blobstore import BlobStore
from services.storage.bodies import Body
from services.storage.paths import Layout
from services.storage.uploads import UploadStore
from shared import errors
from tests.reliability.conftest import (
    IDLE_TIMEOUT,
    MANIFEST_MAX_SIZE,
    MAX_HEADER_SIZE,
    MAX_UPLOADS_PER_REPOSITORY,
)
from tests.reliability.helpers import (
    assert_oci_error,
    raw_bytes_request,
    raw_request,
    storage_root,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import OCI_MANIFEST, RegistryClient


def test_header_size_limit(limited_dockyard: Dockyard) -> None:
    d = limited_dockyard
    # Just under the limit (leaving room for the request line and Host) is served ...
    ok = raw_request(d.url, "GET", "/v2/", headers={"X-Pad": "a" * (MAX_HEADER_SIZE - 200)})
    assert ok.status == 200, ok
    # ... twice the limit is refused with 431 and the JSON error body.
    resp = raw_bytes_request(d.url, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"X-Pad: " + b"a" * (2 * MAX_HEADER_SIZE) + b"\r\n\r\n")
    assert resp.status == 431, resp
    assert_oci_error(resp.body, "UNSUPPORTED")  # 431: see docs/architecture.md


def test_manifest_size_limit(limited_dockyard: Dockyard) -> None:
    client = RegistryClient(limited_dockyard.url)
    name = "reliability/manifest-size"
    doc = json.loads(client.image_manifest(name))

    def padded(total: int) -> bytes:
        doc["annotations"] = {"pad": ""}
        base = len(json.dumps(doc).encode())
        doc["annotations"]["pad"] = "x" * (total - base)
        body = json.dumps(doc).encode()
        assert len(body) == total
        return body

    at_limit = padded(MANIFEST_MAX_SIZE)
    r = client.put_manifest(name, "fits", at_limit)
    assert r.status == 201, (r.status, r.data)
    over = padded(MANIFEST_MAX_SIZE + 1)
    r = client.put_manifest(name, "too-big", over)
    assert r.status == 413, (r.status, r.data)
    assert_oci_error(r.data, {"MANIFEST_INVALID", "SIZE_INVALID"})
    assert client.get_manifest(name, "too-big").status == 404
    # A chunked request body (no Content-Length from the client) is held to it too.
    r = client.request("PUT", f"/v2/{name}/manifests/too-big-chunked",
                       body=iter([over[:1000], over[1000:]]),
                       headers={"Content-Type": OCI_MANIFEST}, chunked=True)
    assert r.status == 413, (r.status, r.data)


@pytest.mark.slow
def test_idle_timeout_closes_silent_connections(limited_dockyard: Dockyard) -> None:
    d = limited_dockyard
    with socket.create_connection((d.host, d.port), timeout=IDLE_TIMEOUT + 30) as s:
        started = time.monotonic()
        try:
            data = s.recv(1)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b""
    assert IDLE_TIMEOUT - 0.5 <= elapsed <= IDLE_TIMEOUT + 3, elapsed
    # The server is unaffected: new connections are served as before.
    assert RegistryClient(d.url).request("GET", "/v2/").status == 200


def test_upload_sessions_per_repository(limited_dockyard: Dockyard) -> None:
    client = RegistryClient(limited_dockyard.url)
    name = "reliability/session-limit"
    locations = [client.start_upload(name) for _ in range(MAX_UPLOADS_PER_REPOSITORY)]
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 429, (r.status, r.data)
    assert_oci_error(r.data, "TOOMANYREQUESTS")
    assert r.headers.get("Retry-After", "").isdigit()
    # Per repository: another one is unaffected.
    other = client.start_upload(name + "-other")
    # Ending a session (cancel or finish) frees its slot.
    assert client.request("DELETE", locations.pop()).status == 204
    locations.append(client.start_upload(name))
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 429
    for location in [*locations, other]:
        assert client.request("DELETE", location).status == 204
    assert not list((storage_root(limited_dockyard) / "uploads").iterdir())


def test_upload_max_age_purges_in_process(tmp_path: Path) -> None:
    """The purge itself, on a real directory in this process: the configured minimum
    age is 60 s, too long to wait for, so sessions are aged by rewriting their start
    time and the purge is given its clock."""
    layout = Layout(tmp_path / "storage")
    layout.create()
    store = UploadStore(layout, BlobStore(layout), max_per_repository=10, max_age=60)
    now = time.time()
    old = store.start("a/b")
    store.append(old, "a/b", Body(5, stream=_Reader(b"hello")))
    young = store.start("a/b")
    layout.upload_info(old).write_bytes(msgpack.packb({"repo": "a/b", "started": now - 120}))
    # Debris of a crash between mkdir and writing the session's info, as old.
    debris = layout.uploads / ("d" * 32)
    debris.mkdir()
    os.utime(debris, (now - 120, now - 120))
    # A partial file a killed process left in tmp/, and one a live request is writing.
    stale_tmp, live_tmp = layout.tmp / "stale", layout.tmp / "live"
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (now - 120, now - 120))
    live_tmp.write_bytes(b"being written")

    assert store.purge(now=now) == 2
    assert not stale_tmp.exists() and live_tmp.exists()
    assert not layout.upload_dir(old).exists()
    assert not layout.upload_marker("a/b", old).exists()
    assert not debris.exists()
    assert store.size(young, "a/b") == 0
    # A purged session is unknown to the API from then on.
    with pytest.raises(errors.BlobUploadUnknown):
        store.size(old, "a/b")
    # The young one goes once it, too, is past the age.
    assert store.purge(now=now + 30) == 0
    assert store.purge(now=now + 61) == 1
    assert list(layout.uploads.iterdir()) == []
    assert list(layout.upload_markers("a/b").iterdir()) == []


class _Reader:
    """A request body stand-in: the store reads with readinto or read."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, n: int) -> bytes:
        out, self._data = self._data[:n], self._data[n:]
        return out
