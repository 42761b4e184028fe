"""Pulls by tag go on while the index restarts: from the fresh tag cache when tag
events are on, from the stale-if-error cache when they are off."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient


@pytest.mark.slow
@pytest.mark.parametrize("cache_ttl", ["60", "0"], ids=["fresh-cache", "stale-if-error"])
def test_index_restart_costs_no_pull_of_a_resolved_tag(fresh_dockyard: Dockyard,
                                                       cache_ttl: str) -> None:
    fresh_dockyard.env = {"DOCKYARD_STORAGE_TAG_CACHE_TTL": cache_ttl}
    fresh_dockyard.start()
    client = RegistryClient(fresh_dockyard.url, timeout=10)
    pushed = {}
    for i in range(5):
        digest, _ = client.push_image("restart/loop", f"t{i}")
        pushed[f"t{i}"] = digest
    for tag in pushed:
        assert client.get_manifest("restart/loop", tag).status == 200

    old = fresh_dockyard.kill("index")
    restarted = False
    failures = []
    deadline = time.monotonic() + 15
    # Pull in a loop through the restart, and a little after it.
    while time.monotonic() < deadline:
        for tag, digest in pushed.items():
            r = client.get_manifest("restart/loop", tag)
            if r.status != 200 or r.headers.get("Docker-Content-Digest") != digest:
                failures.append((tag, r.status))
        if not restarted:
            with contextlib.suppress(LookupError):
                restarted = fresh_dockyard.child("index").pid != old
            if restarted:
                deadline = min(deadline, time.monotonic() + 1.0)
    assert restarted, "the index was not restarted"
    assert not failures, failures[:5]

    fresh_dockyard.wait_restarted("index", old)
    status, _, body = client.json("GET", "/v2/restart/loop/tags/list")
    assert status == 200
    assert sorted(body["tags"]) == sorted(pushed)
