"""Helpers for the fault tests: raw HTTP, OCI error checks, storage-root inspection
(a directory, or the bucket of a dockyard on the S3 backend).

Everything here talks to real processes over loopback; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

from tests.support.bucket import BucketView
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256
from tests.support.seaweedfs import bucket_of

MiB = 1024 * 1024

# Strings that must never reach a client: they mean a stack trace or an
# internal path leaked into an error body.
LEAK_MARKERS = ("Traceback", 'File "', ".py", "site-packages", "/tmp/", "Errno", "/work/")


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def raw_request(base_url: str, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> Raw:
    """One request with `path` sent exactly as given: http.client does not normalise
    `..` or decode %2F, unlike urllib3's URL parsing."""
    host, port = _host_port(base_url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return Raw(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def raw_bytes_request(base_url: str, request: bytes, timeout: float = 30.0) -> Raw:
    """Send `request` verbatim on a fresh socket (for bytes http.client refuses to send,
    such as a bare NUL in the request line) and read the answer until the server closes."""
    host, port = _host_port(base_url)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            chunks.append(piece)
            if _response_complete(b"".join(chunks)):
                break
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/"), f"no HTTP response: {data[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Raw(status, headers, body)


def _response_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def assert_oci_error(body: bytes, codes: str | Iterable[str], *,
                     secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Check `body` is the spec's error document with one of `codes`, leaking nothing."""
    wanted = {codes} if isinstance(codes, str) else set(codes)
    text = body.decode("utf-8", "replace")
    for marker in (*LEAK_MARKERS, *secrets):
        assert marker not in text, f"{marker!r} leaked into an error body: {text[:500]}"
    doc = json.loads(body)
    assert isinstance(doc, dict) and list(doc) == ["errors"], doc
    entries = doc["errors"]
    assert isinstance(entries, list) and entries, doc
    for entry in entries:
        assert set(entry) == {"code", "message", "detail"}, entry
        assert isinstance(entry["code"], str) and entry["code"].isupper(), entry
        assert isinstance(entry["message"], str) and entry["message"], entry
    assert entries[0]["code"] in wanted, f"code {entries[0]['code']}, wanted {wanted}: {doc}"
    return entries[0]


# -- the storage root ---------------------------------------------------------------


def storage_root(d: Dockyard) -> Path:
    return d.data_dir / "storage"


def files_under(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def assert_blobs_intact(root: Path) -> set[str]:
    """Every file under blobs/ sits at <algorithm>/<first two hex>/<hex> of its own
    content: a partial or corrupt blob would fail here. Returns the digests found."""
    found = set()
    for path in files_under(root / "blobs"):
        algorithm, prefix, hexpart = path.relative_to(root / "blobs").parts
        assert prefix == hexpart[:2], f"misplaced blob file {path}"
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        assert h.hexdigest() == hexpart, f"blob {path} does not hash to its name"
        found.add(f"{algorithm}:{hexpart}")
    return found


def stored_keys(d: Dockyard, under: str) -> list[str]:
    """Every key below `under` (`paths.Keys`: ``blobs/``, ``repositories/``...) that
    `d` stores: files under its storage root, or objects of its bucket."""
    if bucket_of(d.env) is not None:
        return BucketView.of(d).keys(under)
    # A record with a value (a manifest link: its media type) is a dangling symlink.
    root = storage_root(d)
    return sorted(p.relative_to(root).as_posix() for p in (root / under).rglob("*")
                  if p.is_file() or p.is_symlink())


def assert_stored_blobs_intact(d: Dockyard) -> set[str]:
    """`assert_blobs_intact` on `d`'s storage, whichever backend holds it."""
    if bucket_of(d.env) is not None:
        return BucketView.of(d).assert_blobs_intact()
    return assert_blobs_intact(storage_root(d))


def blob_path(root: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":")
    return root / "blobs" / algorithm / hexpart[:2] / hexpart


def assert_no_debris(root: Path) -> None:
    """No partial files in tmp/, no upload session left open, no stray link temp files."""
    # Readiness probes (the routers' health checks, every discovery.health_interval)
    # write and remove a .probe- file in tmp/; one may be there for a moment.
    debris = [p for p in files_under(root / "tmp") if not p.name.startswith(".probe-")]
    assert debris == [], debris
    assert list((root / "uploads").iterdir()) == []
    markers = [p for p in files_under(root / "repositories") if p.parent.name == "_uploads"]
    assert markers == [], markers
    stray = [p for p in files_under(root / "repositories") if p.name.startswith(".")]
    assert stray == [], stray


def assert_no_internal_errors(d: Dockyard) -> None:
    """No request was answered 500 and nothing escaped to waitress with a traceback."""
    log = d.log_text()
    assert not re.search(r"dockyard\.access: \S+ \S+ 500 ", log), _lines_with(log, " 500 ")
    assert "unhandled error" not in log, _lines_with(log, "unhandled error")
    assert "Exception while serving" not in log, _lines_with(log, "Exception while serving")


def _lines_with(text: str, needle: str) -> str:
    return "\n".join(line for line in text.splitlines() if needle in line)[-3000:]


# -- uploads and pulls through the router --------------------------------------------


def with_query(location: str, query: str) -> str:
    return location + ("&" if "?" in location else "?") + query


def patch_chunk(client: RegistryClient, location: str, data: bytes,
                start: int) -> urllib3.BaseHTTPResponse:
    return client.request("PATCH", location, body=data, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{start}-{start + len(data) - 1}",
    })


def upload_offset(client: RegistryClient, location: str) -> int:
    """The session's size from GET on its location (`Range: 0-<last>`)."""
    r = client.request("GET", location)
    assert r.status == 204, (r.status, r.data)
    last = int(r.headers["Range"].split("-")[1])
    # "0-0" is also what an empty session answers; the data are never one byte long here.
    return 0 if last == 0 else last + 1


def finish_upload(client: RegistryClient, location: str, digest: str,
                  data: bytes = b"") -> urllib3.BaseHTTPResponse:
    return client.request("PUT", with_query(location, f"digest={digest}"), body=data,
                          headers={"Content-Type": "application/octet-stream"})


# Longer than the lease of an upload's lock whose holder died or could not release it
# (services/storage/backends/s3.py).
RETRY_FOR = 45.0


def as_a_client_retries(request: Callable[[], urllib3.BaseHTTPResponse],
                        ) -> urllib3.BaseHTTPResponse:
    """Send until the answer is not 503, waiting as its Retry-After says, as docker
    does (bounded by RETRY_FOR)."""
    deadline = time.monotonic() + RETRY_FOR
    while True:
        r = request()
        if r.status != 503 or time.monotonic() > deadline:
            return r
        assert_oci_error(r.data, "UNAVAILABLE")
        time.sleep(min(int(r.headers["Retry-After"]), 5))


def assert_blob_served(client: RegistryClient, name: str, digest: str, size: int) -> None:
    r = client.request("GET", f"/v2/{name}/blobs/{digest}", preload_content=False)
    try:
        assert r.status == 200, (r.status, r.data)
        h = hashlib.sha256()
        n = 0
        for chunk in r.stream(4 * MiB):
            h.update(chunk)
            n += len(chunk)
    finally:
        r.release_conn()
    assert n == size and "sha256:" + h.hexdigest() == digest


def assert_pullable(client: RegistryClient, name: str, tag: str, body: bytes) -> None:
    """The tag serves exactly `body`, and every blob the manifest names is served whole."""
    r = client.get_manifest(name, tag)
    assert r.status == 200, (name, tag, r.status, r.data)
    assert r.data == body and r.headers["Docker-Content-Digest"] == sha256(body)
    doc = json.loads(body)
    for desc in [doc["config"], *doc["layers"]]:
        assert_blob_served(client, name, desc["digest"], desc["size"])


def listed_tags(client: RegistryClient, name: str) -> list[str]:
    status, _, body = client.json("GET", f"/v2/{name}/tags/list?n=10000")
    assert status == 200, body
    return body["tags"] or []
