"""Helpers shared by the integration tests: finding the services behind the router,
raw HTTP where urllib3 would normalise what we want to send, and bounded polling."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

from tests.support.bucket import BucketView
from tests.support.processes import Dockyard
from tests.support.registry_client import signed_headers
from tests.support.seaweedfs import bucket_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# A plain client for talking to the internal services directly (never through the router).
_direct = urllib3.PoolManager(retries=False, timeout=5.0)


def unique_repo(prefix: str = "it") -> str:
    """A repository name no other test uses: the session registry is shared."""
    return f"{prefix}/{uuid.uuid4().hex[:16]}"


def service_url(dockyard: Dockyard, service: str) -> str:
    """The internal http://host:port of a child, from the `--listen` it was started with.

    Reading the live child's command line (rather than the serve log) stays right
    after restarts and never depends on log buffering.
    """
    cmd = dockyard.child(service).cmdline()
    return "http://" + cmd[cmd.index("--listen") + 1]


def router_metrics_url(dockyard: Dockyard) -> str:
    cmd = dockyard.child("router").cmdline()
    return "http://" + cmd[cmd.index("--metrics-listen") + 1] + "/metrics"


def direct(method: str, url: str, *, signer: Any = None, **kw: Any,
           ) -> urllib3.BaseHTTPResponse:
    """One request; with `signer`, signed as dockyard's services sign their calls."""
    if signer is not None:
        kw["headers"] = headers = dict(kw.get("headers") or {})
        headers.update(signed_headers(signer, method, url, headers, kw.get("body")))
    return _direct.request(method, url, redirect=False, **kw)


def storage_root(dockyard: Dockyard) -> Path:
    """`serve` puts the storage root under the data directory unless configured otherwise."""
    return dockyard.data_dir.resolve() / "storage"


def blob_file(dockyard: Dockyard, digest: str) -> Path:
    algorithm, hexpart = digest.split(":", 1)
    return storage_root(dockyard) / "blobs" / algorithm / hexpart[:2] / hexpart


def blob_key(digest: str) -> str:
    """Where a blob is stored, relative to the storage root or the bucket's prefix."""
    algorithm, hexpart = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexpart[:2]}/{hexpart}"


def stored_blob(dockyard: Dockyard, digest: str) -> bytes | None:
    """The bytes stored under the blob's key, on whichever backend; None when absent."""
    if bucket_of(dockyard.env) is not None:
        bucket = BucketView.of(dockyard)
        return bucket.read(blob_key(digest)) if bucket.has_blob(digest) else None
    path = blob_file(dockyard, digest)
    return path.read_bytes() if path.exists() else None


def blob_copies(dockyard: Dockyard, digest: str) -> list[str]:
    """Every stored object under blobs/ whose name holds the digest's hex (a finished
    blob, or a temporary copy left behind), as keys relative to the root or prefix."""
    hexpart = digest.split(":", 1)[1]
    if bucket_of(dockyard.env) is not None:
        return [k for k in BucketView.of(dockyard).keys("blobs/") if hexpart in k]
    root = storage_root(dockyard)
    return sorted(p.relative_to(root).as_posix() for p in (root / "blobs").rglob(f"*{hexpart}*"))


def raw_request(base_url: str, method: str, path: str,
                headers: list[tuple[str, str]], body: bytes | None = None,
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request through http.client, which sends header lines exactly as given.

    urllib3 takes a dict, so it cannot send the same header twice; clients do.
    """
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05,
               what: str = "condition") -> float:
    """Poll `check` until it is true; returns the seconds it took. Always bounded."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def loads(data: bytes) -> Any:
    return json.loads(data) if data else None


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def public_location(location: str, router_addr: str) -> str:
    """Assert a Location/Link target is on the router's address; return its path and query.

    A relative reference is on the router by construction; an absolute one must
    name the router's host:port, never a storage or index port.
    """
    parts = urlsplit(location)
    if parts.netloc:
        assert parts.netloc == router_addr, f"{location} does not point at {router_addr}"
        assert parts.scheme == "http"
    assert parts.path.startswith("/v2/"), location
    return parts.path + (f"?{parts.query}" if parts.query else "")
