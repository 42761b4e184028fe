"""The search snapshot's block filters: never a missed match, and cheap rebuilds."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from services.index import search
from services.index.search import _blocks, _Snapshot

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
