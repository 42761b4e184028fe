"""The event stream against the session's real redis-server: the index queues an
event in the same script as its change (and only when the change happens), and an
endpoint's queue pends, claims, dead-letters, replays and trims safely."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from services.index.store import IndexStore
from services.notifications.queue import EndpointQueue, trim
from shared.user_events import Event, RequestRecord, Source, Target, stream_key
from tests.support.processes import RedisServer


def _client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def _event(action: str = "push", **target: Any) -> str:
    return Event(action, Target("r", **target), RequestRecord("i", "PUT"),
                 Source("h:1")).to_json()


def _record(store: IndexStore, tag: str | None, event: str | None) -> None:
    store.put_manifest(repo="r", digest=f"sha256:{uuid.uuid4().hex}", tag=tag,
                       media_type="m", size=1, artifact_type=None, annotations={},
                       subject=None, refs=[], event=event)


def _stream(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _, f in client.xrange(stream_key(prefix))]


def test_the_index_queues_events_with_its_changes(redis_server: RedisServer,
                                                  prefix: str) -> None:
    client = _client(redis_server)
    store = IndexStore(client, prefix, event_groups=("ep",))
    _record(store, "v1", _event(tag="v1"))
    _record(store, "v2", None)  # webhooks off: nothing queued
    assert [e["target"]["tag"] for e in _stream(client, prefix)] == ["v1"]
    # The group was made before the first event: the endpoint will read it.
    assert client.xinfo_groups(stream_key(prefix))[0]["lag"] == 1

    assert store.delete_tag("r", "v2", _event("delete", tag="v2"))["deleted"]
    assert not store.delete_tag("r", "v2", _event("delete", tag="v2"))["deleted"]
    assert [e["action"] for e in _stream(client, prefix)] == ["push", "delete"]


def test_a_manifest_delete_reports_each_tag_it_removes(redis_server: RedisServer,
                                                       prefix: str) -> None:
    client = _client(redis_server)
    store = IndexStore(client, prefix, event_groups=("ep",))
    digest = "sha256:" + "ab" * 32
    for tag in ("a", "b"):
        store.put_manifest(repo="r", digest=digest, tag=tag, media_type="m", size=1,
                           artifact_type=None, annotations={}, subject=None, refs=[])
    template = Event("delete", Target("r", tag="__TAG__"), RequestRecord("i", "DELETE"),
                     Source("h:1"), id="__ID__").to_json()
    deleted = _event("delete", digest=digest)
    assert store.delete_manifest("r", digest, deleted, template)["tags_removed"] == 2
    events = _stream(client, prefix)
    assert events[0]["target"] == {"repository": "r", "digest": digest}
    assert sorted(e["target"]["tag"] for e in events[1:]) == ["a", "b"]
    ids = [e["id"] for e in events[1:]]
    assert len(set(ids)) == 2 and all(uuid.UUID(i).version == 5 for i in ids)


def test_pending_claim_dead_letter_replay_and_trim(redis_server: RedisServer,
                                                   prefix: str) -> None:
    client = _client(redis_server)
    stream = stream_key(prefix)
    first, second = (EndpointQueue(client, prefix, "ep", name) for name in ("c1", "c2"))
    other = EndpointQueue(client, prefix, "other", "c1")
    for q in (first, other):
        q.groups.ensure()
    for n in range(4):
        client.xadd(stream, {"event": _event(tag=f"t{n}")})

    taken = first.new(2, 100)
    assert [json.loads(e.event)["target"]["tag"] for e in taken] == ["t0", "t1"]
    assert first.own_pending(10) == taken  # what a restart with the same name resumes
    assert second.claim_stale(60, 10) == []  # not idle long enough
    time.sleep(0.05)
    assert second.claim_stale(0.01, 10) == taken  # the first one died
    second.ack([taken[0].id])
    second.dead_letter([taken[1]], "HTTP 500", 3)
    state = first.state()
    assert (state["pending"], state["lag"], state["dead_letters"]) == (0, 2, 1)

    # Nothing is trimmed that an endpoint still needs: `other` has read nothing.
    assert trim(client, prefix, ["ep", "other"]) == 0
    for e in other.new(10, 100):
        other.ack([e.id])
    assert trim(client, prefix, ["ep", "other"]) == 2  # what both are done with
    assert client.xlen(stream) == 2

    assert first.replay_dead_letters() == 1
    assert client.xlen(first.dead) == 0
    replayed = [e for e in first.new(10, 100) if e.only]
    assert [(e.only, json.loads(e.event)["target"]["tag"]) for e in replayed] == [("ep", "t1")]


def test_an_entry_trimmed_while_pending_is_dropped(redis_server: RedisServer,
                                                   prefix: str) -> None:
    client = _client(redis_server)
    q = EndpointQueue(client, prefix, "ep", "c1")
    q.groups.ensure()
    entry_id = client.xadd(stream_key(prefix), {"event": _event()})
    assert len(q.new(10, 100)) == 1
    client.xdel(stream_key(prefix), entry_id)
    assert q.own_pending(10) == []
    assert q.state()["pending"] == 0
