"""The index's typed read interface and the writes the collector relies on, on a real
Redis: conditional tag deletes, forgetting an emptied repository, tag times."""

from __future__ import annotations

import time

import pytest
import redis

from services.index.read_model import IndexReader, ManifestRecord
from services.index.store import IndexStore
from tests.support.processes import RedisServer

M1, M2, SUBJECT = (f"sha256:{i:064x}" for i in (1, 2, 3))


@pytest.fixture
def stores(redis_server: RedisServer) -> tuple[IndexStore, IndexReader]:
    client = redis.Redis.from_url(redis_server.url)
    prefix = f"t{time.monotonic_ns()}:"
    return IndexStore(client, prefix), IndexReader(client, prefix)


def put(store: IndexStore, repo: str, digest: str, tag: str | None,
        subject: str | None = None) -> None:
    store.put_manifest(repo=repo, digest=digest, tag=tag, media_type="m", size=10,
                       artifact_type=None, annotations={}, subject=subject,
                       refs=["sha256:" + "a" * 64])


def test_reader_returns_typed_state(stores: tuple[IndexStore, IndexReader]) -> None:
    store, reader = stores
    before = time.time()
    put(store, "r/a", M1, "v1")
    put(store, "r/a", M2, None, subject=M1)
    state = reader.repository("r/a")
    assert state.tags == {"v1": M1}
    assert state.manifests[M2] == ManifestRecord(M2, "m", 10, ("sha256:" + "a" * 64,), M1)
    # Kept to the millisecond.
    assert before - 0.001 <= state.tag_times["v1"] <= time.time() + 0.001
    assert [s.name for s in reader.repository_states()] == ["r/a"]


def test_tag_deleted_only_while_it_names_the_digest(
        stores: tuple[IndexStore, IndexReader]) -> None:
    store, reader = stores
    put(store, "r/b", M1, "latest")
    put(store, "r/b", M2, "latest")          # pushed again since a policy chose it
    assert not store.delete_tag_if("r/b", "latest", M1)
    assert reader.repository("r/b").tags == {"latest": M2}
    assert store.delete_tag_if("r/b", "latest", M2)
    assert reader.repository("r/b").tags == {}


def test_only_an_empty_repository_is_forgotten(stores: tuple[IndexStore, IndexReader]) -> None:
    store, reader = stores
    put(store, "r/c", M1, "v1")
    assert store.forget_repository("r/c") == {"forgotten": False}
    store.delete_manifests([("r/c", M1, None)])
    assert store.forget_repository("r/c") == {"forgotten": True}
    assert reader.repositories() == []
    assert reader.repository("r/c").tags == {}
