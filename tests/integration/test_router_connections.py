"""The router's pooled connections to a backend survive every kind of answer."""

from __future__ import annotations

import threading

import pytest
import urllib3

from tests.support.processes import Dockyard
from tests.support.registry_client import sha256


# The router's connections, with storage's headers-only answers of the shared disk; on
# S3 the same 3,200 requests take 80 s of CI for nothing more about the router.
@pytest.mark.filesystem_only
def test_mixed_concurrent_requests_never_break_a_backend_connection(
        dockyard: Dockyard) -> None:
    # Answers without a body (HEAD, storage's headers-only answer to a blob
    # GET) must be read to the end before their connection is reused, or the
    # next request on it fails and the client gets a 503 or a garbled answer.
    http = urllib3.PoolManager(maxsize=32, retries=False, timeout=30)
    data = b"connection reuse"
    blob = sha256(data)
    base = f"{dockyard.url}/v2/router-conn/blobs"
    assert http.request("POST", f"{base}/uploads/?digest={blob}", body=data).status == 201
    requests = [
        ("HEAD", f"{base}/sha256:{'b' * 64}", 404),
        ("HEAD", f"{base}/{blob}", 200),
        ("POST", f"{base}/uploads/", 202),
        ("GET", f"{base}/{blob}", 200),
        ("GET", f"{base}/sha256:{'c' * 64}", 404),
    ]
    failures: list[str] = []

    def worker() -> None:
        for _ in range(40):
            for method, url, status in requests:
                try:
                    r = http.request(method, url)
                except urllib3.exceptions.HTTPError as e:
                    failures.append(f"{method} {url}: {e}")
                    continue
                if r.status != status or (method == "GET" and status == 200 and r.data != data):
                    failures.append(f"{method} {url}: {r.status}")

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
