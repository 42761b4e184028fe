"""The HA scenarios of issue 15, each against the same running topology (2 routers,
3 storage, 2 index, Redis primary + replica + 3 sentinels; see `topology`), under
load from several client processes that verify every byte (see `load`).

Each prints its figures; ``HA_SECONDS`` and ``HA_CLIENTS`` set the load, and
``HA_RESULTS`` collects the figures as JSON lines (docs/high-availability.md).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import urllib3

from shared.service_auth import ServiceKey
from tests.ha import scenario
from tests.ha.topology import INTERNAL_SECRET, MASTER, PARTITION_GID, Service, Topology
from tests.support.processes import have
from tests.support.registry_client import signed_headers

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (have("redis-server") and have("redis-sentinel")),
                                 reason="needs redis-server and redis-sentinel")]


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    t = Topology(tmp_path_factory.mktemp("ha"))
    # The last storage replica runs with a group id an iptables rule can match (scenario 4).
    t.storage[-1].gid = PARTITION_GID
    try:
        yield t.start()
    finally:
        t.stop()


@pytest.fixture
def topology(ha: Topology) -> Topology:
    """The module's topology with every process running and Redis replicated."""
    for proc in [*ha.redis, *ha.sentinels]:
        if not proc.running:
            proc.start()
    ha.wait_replicated()
    for service in ha.services:
        if not service.running:
            service.start()
    return ha


def test_kill_9_of_random_services(topology: Topology) -> None:
    """A random router, storage or index process is killed every few seconds and
    started again, as a supervisor or Kubernetes would."""
    t = topology
    killed: list[str] = []

    def chaos(stop: threading.Event) -> None:
        # A random order in which every kind comes early: router, storage, index first.
        rng = random.Random()
        first = [rng.choice(t.routers), rng.choice(t.storage), rng.choice(t.index)]
        rng.shuffle(first)
        victims: list[Service] = [*t.routers, *t.storage, *t.index]
        stop.wait(2.0)
        while not stop.is_set():
            victim = first.pop(0) if first else rng.choice(victims)
            victim.kill()
            killed.append(victim.name)
            stop.wait(1.0)
            victim.start()
            stop.wait(2.0)

    outcome = scenario.run(t, "kill9", chaos)
    print("  killed:", ", ".join(killed))
    assert len(killed) >= 3
    scenario.assert_clean(outcome)
    # Every replica took part: the routers and storage use every address of the names.
    for service in [*t.storage, *t.index]:
        assert "/v2/ha/kill9/" in service.log_text() or "/internal/rpc/" in \
            service.log_text(), f"{service.name} was never used"


def test_redis_primary_killed(topology: Topology) -> None:
    """kill -9 of the Redis primary: Sentinel promotes the replica; pushes pause with
    503 and Retry-After (no replica confirms writes until the old primary is back as
    one), then resume; no acknowledged tag is lost."""
    t = topology
    timeline: dict[str, float] = {}

    def chaos(stop: threading.Event) -> None:
        stop.wait(4.0)
        old = t.primary()
        start = time.monotonic()
        old.kill()
        deadline = start + 30
        while t.primary() is old:
            assert time.monotonic() < deadline, "no promotion"
            time.sleep(0.1)
        timeline["promoted_after"] = time.monotonic() - start
        old.start()  # restarted by its supervisor; Sentinel makes it a replica
        t.wait_replicated()
        timeline["replicated_after"] = time.monotonic() - start
        timeline["replicated_at"] = time.time()

    outcome = scenario.run(t, "redis-failover", chaos)
    print(f"  promoted after {timeline['promoted_after']:.1f}s, writes confirmed again "
          f"after {timeline['replicated_after']:.1f}s")
    scenario.assert_clean(outcome)
    assert outcome.statuses.get("503", 0) > 0, "the failover was not seen as 503"
    resumed = [a for a in outcome.acked_items if a["at"] > timeline["replicated_at"]]
    assert resumed, "no push was acknowledged after the failover"


def test_rolling_restart(topology: Topology) -> None:
    """Every process restarted one at a time with SIGTERM (graceful drain), Redis
    included (replica, then a Sentinel switchover, then the old primary, then each
    sentinel): zero failed operations."""
    t = topology
    drains: dict[str, float] = {}

    def chaos(stop: threading.Event) -> None:
        stop.wait(3.0)
        for service in [*t.index, *t.storage, *t.routers]:
            drains[service.name] = service.terminate(30)
            service.start()
            time.sleep(1.0)
        replica = next(n for n in t.redis if n is not t.primary())
        replica.terminate(30)
        replica.start()
        t.wait_replicated()
        old = t.primary()
        sentinel = redis.Redis(host=t.sentinels[0].host, port=t.sentinels[0].port)
        sentinel.sentinel_failover(MASTER)
        sentinel.close()
        deadline = time.monotonic() + 30
        while t.primary() is old:
            assert time.monotonic() < deadline, "switchover did not happen"
            time.sleep(0.1)
        t.wait_replicated()
        old.terminate(30)
        old.start()
        t.wait_replicated()
        for s in t.sentinels:
            s.terminate(10)
            s.start()
            t.wait_sentinels_agree()

    outcome = scenario.run(t, "rolling-restart", chaos, seconds=120, linger=3.0)
    print("  drain seconds:", {k: round(v, 2) for k, v in drains.items()})
    scenario.assert_clean(outcome)


def _signed(http: urllib3.PoolManager, method: str, url: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
    """A request straight to a storage replica: storage answers only signed calls."""
    headers = dict(headers or {})
    headers.update(signed_headers(_KEY, method, url, headers, body))
    return http.request(method, url, body=body, headers=headers)


_KEY = ServiceKey(INTERNAL_SECRET)


def _iptables(action: str, gid: int, address: str) -> None:
    subprocess.run(["iptables", action, "OUTPUT", "-m", "owner", "--gid-owner", str(gid),
                    "-d", address, "-j", "DROP"], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not have("iptables"), reason="needs root and iptables")
def test_storage_partitioned_from_redis(topology: Topology) -> None:
    """One storage replica loses Redis (its events subscription), while routers still
    reach it: it keeps serving blobs and pulls by digest, and the registry as a whole
    keeps working."""
    t = topology
    victim = t.storage[-1]
    addresses = [n.host for n in [*t.redis, *t.sentinels]]
    before = victim.log_text().count("index events unavailable")
    for address in addresses:
        _iptables("-I", PARTITION_GID, address)
    try:
        outcome = scenario.run(t, "storage-partitioned")
        assert victim.log_text().count("index events unavailable") > before, \
            "the partition was not seen by the storage replica"
        # Directly at the cut-off replica: every pushed image, by digest.
        http = urllib3.PoolManager(retries=False, timeout=10)

        def get(url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
            return _signed(http, "GET", url, headers=headers)

        for item in outcome.acked_items:
            r = get(f"{victim.url}/v2/{item['repo']}/manifests/{item['digest']}",
                    {"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status == 200 and scenario_digest(r.data) == item["digest"]
            for digest, size in item["blobs"]:
                r = get(f"{victim.url}/v2/{item['repo']}/blobs/{digest}", {})
                assert r.status == 200 and len(r.data) == size
                assert scenario_digest(r.data) == digest
    finally:
        for address in addresses:
            _iptables("-D", PARTITION_GID, address)
    scenario.assert_clean(outcome)


def scenario_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_chunks_to_a_different_storage_replica_each_time(topology: Topology,
                                                          tmp_path: Path) -> None:
    """POST on one storage replica, each PATCH on the next, PUT on another: the blob
    completes, verifies, and is served by every replica and both routers."""
    t = topology
    http = urllib3.PoolManager(retries=False, timeout=30)
    storages = [s.url for s in t.storage]
    completed = 0
    for n in range(4):
        data = os.urandom(random.randint(200_000, 600_000))
        digest = scenario_digest(data)
        chunks = 3 + n
        r = _signed(http, "POST", f"{storages[0]}/v2/ha/chunks/blobs/uploads/")
        assert r.status == 202, r.data
        location = urllib3.util.parse_url(r.headers["Location"]).request_uri
        size = -(-len(data) // chunks)
        used = [0]
        for i, start in enumerate(range(0, len(data), size)):
            target = (i + 1) % len(storages)
            used.append(target)
            piece = data[start:start + size]
            r = _signed(http, "PATCH", storages[target] + location, body=piece, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(piece) - 1}"})
            assert r.status == 202, (target, r.status, r.data)
            location = urllib3.util.parse_url(r.headers["Location"]).request_uri
        final = (used[-1] + 1) % len(storages)
        sep = "&" if "?" in location else "?"
        r = _signed(http, "PUT", f"{storages[final]}{location}{sep}digest={digest}")
        assert r.status == 201, r.data
        assert r.headers["Docker-Content-Digest"] == digest
        assert len(set(used)) == len(storages)
        for base in [*storages, *t.router_urls]:
            r = _signed(http, "GET", f"{base}/v2/ha/chunks/blobs/{digest}")
            assert r.status == 200 and scenario_digest(r.data) == digest, base
        completed += 1
    print(f"\nchunks-across-replicas: {completed} uploads attempted, 0 retried, "
          f"0 failed, 0 lost, each verified on {len(storages)} storage replicas and "
          f"{len(t.router_urls)} routers")


def test_scale_out_and_in_by_name(topology: Topology) -> None:
    """A fourth storage replica added to the name under load starts taking requests
    within a discovery interval; taken out of the name and stopped, it is dropped
    without a failed operation."""
    t = topology
    if not t.use_dns:
        pytest.skip("needs a mount namespace for the per-process /etc/hosts")
    timeline: dict[str, float] = {}

    def chaos(stop: threading.Event) -> None:
        stop.wait(3.0)
        added = t.add_storage()
        start = time.monotonic()
        while "/v2/ha/scale/" not in added.log_text():
            assert time.monotonic() - start < 20, "the new replica was never used"
            time.sleep(0.2)
        timeline["used_after"] = time.monotonic() - start
        stop.wait(3.0)
        t.remove_storage(added)

    outcome = scenario.run(t, "scale", chaos, seconds=min(scenario.SECONDS, 20))
    print(f"  the added replica took its first request {timeline['used_after']:.1f}s "
          "after it was in the name")
    scenario.assert_clean(outcome)
