"""Clients that stall, lie about their body length, or connect and say nothing."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import IDLE_TIMEOUT
from tests.reliability.helpers import (
    MiB,
    assert_blob_served,
    assert_blobs_intact,
    blob_path,
    finish_upload,
    patch_chunk,
    storage_root,
    upload_offset,
    with_query,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256

# How late past the idle timeout a stalled connection may still be open.
SLACK = 3.0


def open_socket(d: Dockyard, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((d.host, d.port), timeout=timeout)


def request_head(method: str, url: str, length: int, extra: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Length: {length}", "Content-Type: application/octet-stream"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_closed(s: socket.socket, limit: float) -> float:
    """Seconds until the server closes `s` (EOF or reset); fails after `limit`."""
    started = time.monotonic()
    s.settimeout(limit)
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail(f"connection still open after {limit:.0f}s")
    assert data == b"", f"the server answered a stalled request: {data[:200]!r}"
    return time.monotonic() - started


@pytest.mark.slow
def test_stalled_body_times_out_and_upload_resumes(limited_dockyard: Dockyard) -> None:
    d = limited_dockyard
    client = RegistryClient(d.url)
    name = "reliability/stalled"
    blob = random.Random(3).randbytes(4 * MiB)
    digest = sha256(blob)
    location = client.start_upload(name)
    r = patch_chunk(client, location, blob[:MiB], 0)
    assert r.status == 202, (r.status, r.data)

    # The next chunk announces 2 MiB, sends half, and stalls.
    with open_socket(d) as s:
        s.sendall(request_head("PATCH", location, 2 * MiB,
                               {"Content-Range": f"{MiB}-{3 * MiB - 1}"}))
        s.sendall(blob[MiB:2 * MiB])
        elapsed = wait_closed(s, IDLE_TIMEOUT + SLACK + 30)
    assert elapsed <= IDLE_TIMEOUT + SLACK, f"closed after {elapsed:.1f}s"

    # Nothing of the half chunk was applied: the upload stands where it stood.
    assert upload_offset(client, location) == MiB
    r = patch_chunk(client, location, blob[MiB:], MiB)
    assert r.status == 202, (r.status, r.data)
    r = finish_upload(client, location, digest)
    assert r.status == 201, (r.status, r.data)
    assert_blob_served(client, name, digest, len(blob))


def test_short_body_then_close_leaves_no_blob(limited_dockyard: Dockyard) -> None:
    d = limited_dockyard
    client = RegistryClient(d.url)
    name = "reliability/short-body"
    root = storage_root(d)
    blob = random.Random(4).randbytes(2 * MiB)
    digest = sha256(blob)

    # A whole-body upload whose Content-Length promises more than is sent. The digest
    # is that of the bytes actually sent, the worst case: were they committed, they
    # would pass verification.
    url = with_query(f"{d.url}/v2/{name}/blobs/uploads/", f"digest={digest}")
    with open_socket(d) as s:
        s.sendall(request_head("POST", url, len(blob) + MiB) + blob)
        s.shutdown(socket.SHUT_WR)
        wait_closed(s, 10)

    # The same against a session: a PATCH announcing more than it sends.
    location = client.start_upload(name)
    r = patch_chunk(client, location, blob[:MiB], 0)
    assert r.status == 202
    with open_socket(d) as s:
        s.sendall(request_head("PATCH", location, 2 * MiB) + blob[MiB:])
        s.shutdown(socket.SHUT_WR)
        wait_closed(s, 10)

    time.sleep(0.2)  # let a (wrongly) dispatched request reach the disk before looking
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert not blob_path(root, digest).exists()
    assert upload_offset(client, location) == MiB
    # A half-received body never reaches the storage root at all.
    assert [p for p in (root / "tmp").iterdir() if not p.name.startswith(".probe-")] == []
    assert_blobs_intact(root)
    # The session is still good: finish it properly.
    r = patch_chunk(client, location, blob[MiB:], MiB)
    assert r.status == 202
    assert finish_upload(client, location, digest).status == 201
    assert_blob_served(client, name, digest, len(blob))


@pytest.mark.slow
def test_idle_connections_do_not_starve_others(dockyard: Dockyard) -> None:
    client = RegistryClient(dockyard.url, timeout=20)
    name = "reliability/idle-crowd"
    sockets: list[socket.socket] = []
    try:
        for _ in range(200):
            sockets.append(open_socket(dockyard))
        # Give the server's accept loop time to take them all in.
        time.sleep(0.5)
        started = time.monotonic()
        for i in range(5):
            digest, body = client.push_image(name, f"v{i}")
            r = client.get_manifest(name, f"v{i}")
            assert r.status == 200 and r.data == body
            assert r.headers["Docker-Content-Digest"] == digest
        assert time.monotonic() - started < 10
        # The crowd is still connected: it was not shed to make room.
        alive = 0
        for s in sockets:
            s.setblocking(False)
            try:
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        assert alive == len(sockets)
    finally:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()
