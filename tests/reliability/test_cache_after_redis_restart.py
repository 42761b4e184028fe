"""The router's response cache across a Redis restart: events published while its
subscription was down are lost, so nothing cached before may be served as fresh."""

from __future__ import annotations

import time

from tests.integration.helpers import direct, router_metrics_url, service_url
from tests.support.processes import Dockyard
from tests.support.registry_client import OCI_MANIFEST, RegistryClient


def _hits(d: Dockyard) -> float:
    text = direct("GET", router_metrics_url(d)).data.decode()
    for line in text.splitlines():
        if line.startswith('dockyard_router_cache_lookups_total{result="hit"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_tag_moved_while_events_were_down_is_never_served_stale(
        fresh_dockyard: Dockyard) -> None:
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=60)
    repo = "reliability/cache-restart"
    first, _ = client.push_image(repo, "moving")
    assert client.get_manifest(repo, "moving").headers["Docker-Content-Digest"] == first
    before = _hits(d)
    assert client.get_manifest(repo, "moving").headers["Docker-Content-Digest"] == first
    assert _hits(d) == before + 1, "the tag was not cached; the test would prove nothing"

    pid = d.kill("redis")
    d.wait_restarted("redis", pid, timeout=30)
    # Moved behind the router's back, straight to storage, as soon as Redis is back:
    # the router's subscription may not be up again, so it may miss this event.
    body = client.image_manifest(repo)
    r = direct("PUT", service_url(d, "storage") + f"/v2/{repo}/manifests/moving", body=body,
               headers={"Content-Type": OCI_MANIFEST}, signer=d.service_key())
    assert r.status == 201, r.data
    second = r.headers["Docker-Content-Digest"]

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r = client.get_manifest(repo, "moving")
        assert r.status == 200, r.data
        assert r.headers["Docker-Content-Digest"] == second
        time.sleep(0.05)
