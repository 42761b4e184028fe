"""Storage on S3 with the index's Redis hung: the collector's fences are there
(`services.storage.redis_fences`), so a write of a blob or a link cannot be fenced.

Writes then answer 503 with Retry-After within the configured timeout (never a 500,
never a hang), nothing partial becomes visible, blob pulls (which need no fence)
go on, storage's /readyz reports the fences unreachable without leaving
rotation, and once Redis answers again the retried push completes and pulls back
byte for byte.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from tests.integration.helpers import direct, service_url
from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256

REDIS_TIMEOUT = 2.0


@pytest.mark.slow
def test_writes_answer_503_while_the_fences_redis_is_hung_and_pulls_go_on(
        seaweedfs: seaweed.SeaweedServer, s3_dockyard_on: Callable[..., Dockyard]) -> None:
    # storage.s3.timeout also bounds each call to the fences' Redis.
    d = s3_dockyard_on(seaweedfs.access, timeout=REDIS_TIMEOUT)
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/fences-down"
    _, before = client.push_image(name, "before")
    layer = json.loads(before)["layers"][0]["digest"]
    pulled = client.request("GET", f"/v2/{name}/blobs/{layer}").data
    data = os.urandom(200_000)
    digest = sha256(data)

    redis = d.child("redis")
    redis.suspend()
    try:
        started = time.monotonic()
        r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}",
                           headers={"Content-Type": "application/octet-stream"}, body=data)
        elapsed = time.monotonic() - started
        assert r.status == 503, (r.status, r.data[:300])
        assert r.headers.get("Retry-After"), dict(r.headers)
        assert b"Traceback" not in r.data
        # Bounded by the timeout (a retry on a fresh connection included), not a hang.
        assert elapsed < 4 * REDIS_TIMEOUT + 5, elapsed
        # A blob pull needs no fence: it goes on.
        got = client.request("GET", f"/v2/{name}/blobs/{layer}")
        assert got.status == 200 and got.data == pulled
        ready = direct("GET", service_url(d, "storage") + "/readyz")
        detail = json.loads(ready.data)
        assert detail["collector_fences_reachable"] is False, detail
        assert ready.status == 200 and detail["object_store_reachable"] is True, detail
    finally:
        redis.resume()
    # Nothing of the refused push is visible.
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404

    deadline = time.monotonic() + 30
    while True:
        r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}",
                           headers={"Content-Type": "application/octet-stream"}, body=data)
        if r.status == 201:
            break
        assert r.status == 503 and time.monotonic() < deadline, (r.status, r.data[:300])
        time.sleep(0.5)
    assert client.request("GET", f"/v2/{name}/blobs/{digest}").data == data
    detail = json.loads(direct("GET", service_url(d, "storage") + "/readyz").data)
    assert detail["collector_fences_reachable"] is True, detail
