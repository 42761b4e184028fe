"""Two storage replicas on one bucket: each follows its own fetch of a blob (its scratch is
its own), so concurrent pulls through both make at most one upstream GET per replica, and
the bucket ends up with one whole, verified copy that both then serve from the cache."""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.proxy.conftest import backend_env, proxy_dockyard, pull_sha256, stored_soon
from tests.support.processes import Dockyard
from tests.support.upstream import Front, Pusher


def test_concurrent_pulls_through_two_s3_replicas_fetch_once_per_replica(
        request: pytest.FixtureRequest, tmp_path, front: Front, pusher: Pusher) -> None:
    env = backend_env(request, "s3")  # one bucket and prefix for both
    replicas: list[Dockyard] = []
    try:
        for i in range(2):
            replicas.append(proxy_dockyard(tmp_path / f"replica{i}", [
                {"prefix": "up", "url": front.url}], env=env).start())
        name = f"team/replicas-{uuid.uuid4().hex[:8]}"
        data = os.urandom(24 * 1024 * 1024)
        digest = pusher.blob(name, data)
        expected = hashlib.sha256(data).hexdigest()
        front.delay = 0.5  # every pull asks while the first fetches are under way

        def pull(i: int) -> tuple[str, str]:
            return pull_sha256(f"{replicas[i % 2].url}/v2/up/{name}/blobs/{digest}")

        try:
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(pull, range(16)))
        finally:
            front.delay = 0.0
        assert [h for h, _ in results] == [expected] * 16
        fetches = front.count("GET", f"/v2/{name}/blobs/{digest}")
        assert 1 <= fetches <= 2, fetches
        assert stored_soon(replicas[0], digest) == data
        # Both replicas serve it from the bucket now, without the upstream.
        for i in range(2):
            assert pull(i) == (expected, "dockyard; hit")
        assert front.count("GET", f"/v2/{name}/blobs/{digest}") == fetches
        # The scratch directories hold no fetch file once the pulls are done.
        for replica in replicas:
            leftovers = list((replica.data_dir / "storage" / "tmp").glob("fetch-*"))
            assert leftovers == [], leftovers
    finally:
        for replica in replicas:
            replica.stop()
