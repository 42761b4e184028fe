"""The search snapshot: block filters that never miss a match, cheap rebuilds, and
queries that trust index events instead of asking Redis each time."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.index import search
from services.index.app import redis_client
from services.index.search import _blocks, _Snapshot
from services.index.store import IndexStore
from shared import events

_ALPHABET = string.ascii_lowercase[:6] + "0123-/._ "


def _snapshot(names: list[str], descriptions: list[str]) -> _Snapshot:
    lines = [f"{n}\t{d}".lower() for n, d in zip(names, descriptions, strict=True)]
    return _Snapshot(version=1, names=names, descriptions=descriptions,
                     blocks=_blocks(lines, names, {}))


def _naive(names: list[str], descriptions: list[str], q: str) -> list[int]:
    return [i for i, (n, d) in enumerate(zip(names, descriptions, strict=True))
            if q in f"{n}\t{d}".lower()]


@settings(max_examples=200, deadline=None)
@given(entries=st.dictionaries(st.text(_ALPHABET, min_size=1, max_size=12),
                               st.text(_ALPHABET, max_size=12), max_size=400),
       query=st.text(_ALPHABET, min_size=1, max_size=8))
def test_blocks_find_exactly_what_a_full_scan_finds(entries: dict[str, str],
                                                    query: str) -> None:
    names = sorted(entries)
    descriptions = [entries[n] for n in names]
    snap = _snapshot(names, descriptions)
    assert snap.matches(query) == _naive(names, descriptions, query)
    # Every line is in exactly one block, in order.
    covered = [b.first + i for b in snap.blocks for i in range(len(b.starts))]
    assert covered == list(range(len(names)))


def test_a_full_name_query_scans_few_blocks() -> None:
    names = sorted(f"team{i % 7}/service-{i:06d}" for i in range(20_000))
    snap = _snapshot(names, [""] * len(names))
    assert len(snap.blocks) > 20
    wanted = search._filter(names[12345])
    candidates = [b for b in snap.blocks if b.trigrams & wanted == wanted]
    # Block boundaries and filter bits follow the process's string hashes, so the
    # count of false candidates varies from run to run; a full scan would be all.
    assert 1 <= len(candidates) <= len(snap.blocks) // 10
    assert [names[i] for i in snap.matches(names[12345])] == [names[12345]]


def test_a_rebuild_reuses_the_filters_of_unchanged_blocks(monkeypatch) -> None:
    names = sorted(f"team/service-{i:06d}" for i in range(0, 20_000, 2))
    lines = list(names)
    first = _blocks(lines, names, {})
    computed = []
    original = search._filter
    monkeypatch.setattr(search, "_filter", lambda text: computed.append(text) or original(text))
    grown = sorted([*names, "team/service-010001"])
    second = _blocks(grown, grown, {b.text: b.trigrams for b in first})
    # The new name lands in one block (or splits one in two at a boundary).
    assert 1 <= len(computed) <= 2
    assert len(second) - len(first) in (0, 1)


def test_with_live_events_a_query_asks_redis_only_after_a_catalog_event(
        index_config: dict[str, Any]) -> None:
    store = IndexStore(redis_client(index_config["index"]["redis"]["url"]),
                       index_config["index"]["redis"]["key_prefix"])
    index = search.SearchIndex(store, refresh=0)
    record = {"tag": "v1", "media_type": "application/vnd.oci.image.manifest.v1+json",
              "size": 1, "artifact_type": None, "annotations": {}, "subject": None, "refs": []}
    store.put_manifest(repo="ev/first", digest="sha256:" + "1" * 64, **record)
    gets = []
    original_get = store.redis.get
    store.redis.get = lambda key: gets.append(key) or original_get(key)  # type: ignore[method-assign]

    index.events_state(True)
    assert [n for n, _ in index.search("ev/", 1, 25).results] == ["ev/first"]
    assert len(gets) == 1
    assert index.search("ev/", 1, 25).current
    assert len(gets) == 1  # no event since: the snapshot is known to be current

    store.put_manifest(repo="ev/second", digest="sha256:" + "2" * 64, **record)
    index.changed(events.repo_scope("ev/second"))  # not a catalog event: still trusted
    assert len(gets) == 1
    index.changed(events.CATALOG_SCOPE)
    # Both start with the query: the more recently pushed first.
    assert [n for n, _ in index.search("ev/", 1, 25).results] == ["ev/second", "ev/first"]
    assert len(gets) == 2

    index.events_state(False)  # without events every query asks
    index.search("ev/", 1, 25)
    index.search("ev/", 1, 25)
    assert len(gets) == 4


def _naive_ranked(names: list[str], descriptions: list[str], pushed: list[float],
                  words: tuple[str, ...]) -> list[int]:
    """The ranking rules of the module docstring, written the slow, obvious way."""
    def rank(i: int) -> int:
        name = names[i]
        if len(words) > 1:
            return 3 if all(w in name for w in words) else 4
        q = words[0]
        if name == q:
            return 0
        if name.rpartition("/")[2] == q:
            return 1
        if name.startswith(q):
            return 2
        return 3 if q in name else 4

    hits = [i for i in range(len(names))
            if all(w in f"{names[i]}\t{descriptions[i]}".lower() for w in words)]
    return sorted(hits, key=lambda i: (rank(i), -pushed[i], i))


_NAME = st.text("ab/-", min_size=1, max_size=6).filter(lambda n: not n.startswith("/"))


@settings(max_examples=200, deadline=None)
@given(entries=st.dictionaries(_NAME, st.tuples(st.text("ab /", max_size=6),
                                                st.integers(0, 5)), max_size=150),
       query=st.text("ab/- ", min_size=1, max_size=6), page_size=st.integers(1, 7))
def test_ranked_pages_follow_the_ranking_rules(entries: dict[str, tuple[str, int]], query: str,
                                               page_size: int) -> None:
    names = sorted(entries)
    descriptions = [entries[n][0] for n in names]
    pushed = [float(entries[n][1]) for n in names]
    words = search.query_words(query)
    snap = _snapshot(names, descriptions)
    snap.lower_names = list(names)
    order = sorted(range(len(names)), key=lambda i: -pushed[i])
    snap.recency = [0] * len(names)
    for place, i in enumerate(order):
        snap.recency[i] = place
    if not words:
        return
    ranked = snap.ranked(words)
    expected = _naive_ranked(names, descriptions, pushed, words)
    assert ranked.total == len(expected)
    pages = [ranked.page(snap, first, page_size)
             for first in range(0, len(expected) + page_size, page_size)]
    assert [i for page in pages for i in page] == expected
