"""The index's Redis behind Sentinel: writes, confirmations and event subscriptions
across a failover, with real redis-server and redis-sentinel processes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.index.store import IndexStore
from shared import events, redis_client
from shared.redis_client import RedisSource, ReplicaAck, ReplicationUnconfirmed
from tests.ha.topology import MASTER, PASSWORD, Topology
from tests.support.processes import have

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (have("redis-server") and have("redis-sentinel")),
                                 reason="needs redis-server and redis-sentinel")]

PREFIX = "dockyard:"


@pytest.fixture
def ha_redis(tmp_path: Path) -> Iterator[Topology]:
    topology = Topology(tmp_path, routers=0, storage=0, index=0)
    try:
        yield topology.start_redis()
    finally:
        topology.stop()


def source(t: Topology) -> RedisSource:
    return redis_client.from_section({
        "sentinels": t.sentinel_addresses, "master_name": MASTER, "password": PASSWORD,
        "sentinel_password": "", "db": 0})


def record(repo: str, tag: str) -> dict:
    return {"repo": repo, "digest": "sha256:" + uuid.uuid4().hex * 2, "tag": tag,
            "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 100,
            "artifact_type": None, "annotations": {}, "subject": None, "refs": []}


def test_writes_across_a_failover_are_acknowledged_only_when_kept(ha_redis: Topology) -> None:
    """Kill -9 the primary under a steady stream of tag writes: every write either
    succeeds or fails with a retryable error, and every acknowledged tag is on the
    promoted replica."""
    t = ha_redis
    client = redis_client.connect(source(t), socket_timeout=2, socket_connect_timeout=1)
    store = IndexStore(client, PREFIX, ReplicaAck(1, 1.0))
    acked: dict[str, str] = {}
    retryable = 0
    longest = 0.0
    failing_since: float | None = None
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal retryable, longest, failing_since
        n = 0
        while not stop.is_set():
            rec = record("ha/failover", f"t{n}")
            try:
                store.put_manifests([rec])
            except redis.exceptions.RedisError as e:
                if not redis_client.is_retryable(e):
                    errors.append(e)
                    return
                retryable += 1
                failing_since = failing_since or time.monotonic()
                time.sleep(0.05)
                continue  # the same tag again, as a client would
            if failing_since is not None:
                longest = max(longest, time.monotonic() - failing_since)
                failing_since = None
            acked[rec["tag"]] = rec["digest"]
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.0)
    old = t.primary()
    before = len(acked)
    old.kill()
    # The promoted replica has no replica of its own until the old primary is back
    # (as a replica, reconfigured by Sentinel): WAIT 1 refuses writes until then.
    deadline = time.monotonic() + 30
    while t.primary() is old and time.monotonic() < deadline:
        time.sleep(0.1)
    assert t.primary() is not old, "Sentinel did not promote the replica"
    old.start()
    t.wait_replicated()
    resumed = len(acked)
    time.sleep(1.0)
    stop.set()
    thread.join(30)
    assert not errors, errors
    assert before > 0 and len(acked) > resumed, (before, resumed, len(acked))
    assert retryable > 0, "the failover was never seen by the writer"

    check = t.primary().client()
    stored = {k.decode(): v.decode()
              for k, v in check.hgetall(store.keys.tagmap("ha/failover")).items()}
    lost = {tag for tag, digest in acked.items() if stored.get(tag) != digest}
    assert not lost, f"{len(lost)} acknowledged tags lost: {sorted(lost)[:5]}"
    print(f"\nfailover: {len(acked)} writes acknowledged, {retryable} retryable failures, "
          f"0 lost, longest unavailability {longest:.2f}s")


def test_wait_refuses_a_write_no_replica_confirmed(ha_redis: Topology) -> None:
    t = ha_redis
    client = redis_client.connect(source(t), socket_timeout=2)
    store = IndexStore(client, PREFIX, ReplicaAck(1, 0.3))
    store.put_manifests([record("ha/wait", "before")])
    replica = next(node for node in t.redis if node is not t.primary())
    replica.kill()
    with pytest.raises(ReplicationUnconfirmed) as raised:
        store.put_manifests([record("ha/wait", "alone")])
    assert redis_client.is_retryable(raised.value)
    with pytest.raises(ReplicationUnconfirmed):
        store.delete_tag("ha/wait", "before")
    # Without a confirmation requirement the primary alone takes writes.
    IndexStore(client, PREFIX).put_manifests([record("ha/wait", "unconfirmed")])
    replica.start()
    t.wait_replicated()
    store.put_manifests([record("ha/wait", "after")])


def test_subscription_follows_the_promoted_primary(ha_redis: Topology) -> None:
    """An events subscriber behind Sentinel goes down with the primary (cache hits
    off), comes back on the promoted replica, and receives what it publishes."""
    t = ha_redis
    states: list[bool] = []
    received: list[str] = []
    sub = events.Subscription(t.sentinel_url,
                              events.channel(PREFIX), received.append, states.append)
    sub.start()

    def wait_for(predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, (states, received)
            time.sleep(0.05)

    wait_for(lambda: states[-1:] == [True])
    old = t.primary()
    old.client().publish(events.channel(PREFIX), "repo:before")
    wait_for(lambda: "repo:before" in received)
    old.kill()
    wait_for(lambda: False in states)
    wait_for(lambda: t.primary() is not old and states[-1] is True)
    new = t.primary()
    new.client().publish(events.channel(PREFIX), "repo:after")
    wait_for(lambda: "repo:after" in received)
