"""EventCache: fresh hits only while index events are live and nothing moved since
the answer was asked for; TTL, byte bound, stale() for the index's bad moments."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import event_cache
from shared.event_cache import EventCache, Stamp
from tests.unit.props import PROPERTY

SCOPE = "repo:team/app"
OTHER = "repo:team/other"


def live_cache(**kw: Any) -> EventCache[str]:
    kw.setdefault("ttl", 60.0)
    kw.setdefault("max_bytes", 1600)
    cache: EventCache[str] = EventCache(**kw)
    cache.events_state(True)
    return cache


def store(cache: EventCache[str], key: str, value: str, scope: str = SCOPE,
          size: int = 10) -> bool:
    return cache.put(cache.stamp(scope), scope, key, value, size)


def stored_bytes(cache: EventCache[Any]) -> int:
    """What the entries really take, next to what the cache believes they take."""
    total = sum(entry.size for entry in cache._entries.values())
    assert total == cache._bytes
    return total


# -- liveness and epochs -----------------------------------------------------


def test_fresh_hits_only_while_events_are_live() -> None:
    cache: EventCache[str] = EventCache(ttl=60.0, max_bytes=1600)
    assert not cache.live
    # Never subscribed: an answer may be kept (for stale()), never served fresh.
    assert store(cache, "k", "v0")
    assert cache.fresh("k") is None
    assert cache.stale("k", 60.0) == "v0"

    cache.events_state(True)
    assert cache.live
    # Stored before the subscription came up: events may have been missed then.
    assert cache.fresh("k") is None
    assert store(cache, "k", "v1")
    assert cache.fresh("k") == "v1"
    assert cache.fresh("k") == "v1"
    assert cache.fresh("missing") is None


def test_subscription_down_makes_entries_non_fresh_and_they_stay_so() -> None:
    cache = live_cache()
    assert store(cache, "k", "v")
    assert cache.fresh("k") == "v"

    cache.events_state(False)
    assert not cache.live
    assert cache.fresh("k") is None
    # Back up: still not fresh, an event may have been lost during the break.
    cache.events_state(True)
    assert cache.fresh("k") is None
    # Kept for stale() though, until replaced.
    assert len(cache) == 1
    assert cache.stale("k", 60.0) == "v"
    assert store(cache, "k", "v2")
    assert cache.fresh("k") == "v2"


def test_a_new_epoch_without_a_visible_break_makes_entries_non_fresh() -> None:
    cache = live_cache()
    assert store(cache, "k", "v")
    # A reconnect reported as a second "up": whatever came between is unknown.
    cache.events_state(True)
    assert cache.live
    assert cache.fresh("k") is None


# -- stamps: an answer that raced a change is never kept -----------------------


def test_answer_whose_scope_was_invalidated_after_its_stamp_is_refused() -> None:
    cache = live_cache()
    stamp = cache.stamp(SCOPE)
    other_stamp = cache.stamp(OTHER)
    cache.invalidate(SCOPE)
    assert cache.put(stamp, SCOPE, "k", "old", 10) is False
    assert cache.fresh("k") is None
    assert cache.stale("k", 60.0) is None
    assert len(cache) == 0
    # Another scope's answer, asked for at the same moment, is unaffected.
    assert cache.put(other_stamp, OTHER, "o", "ok", 10) is True
    assert cache.fresh("o") == "ok"
    # A stamp taken after the change is good.
    assert cache.put(cache.stamp(SCOPE), SCOPE, "k", "new", 10) is True
    assert cache.fresh("k") == "new"


def test_answer_whose_stamp_predates_a_change_of_events_state_is_refused() -> None:
    cache = live_cache()
    stamp = cache.stamp(SCOPE)
    cache.events_state(False)
    cache.events_state(True)
    assert cache.put(stamp, SCOPE, "k", "v", 10) is False
    assert cache.fresh("k") is None
    assert cache.stamp(SCOPE) != stamp


def test_stamps_move_only_with_their_scope_or_the_epoch() -> None:
    cache = live_cache()
    before = cache.stamp(SCOPE)
    cache.invalidate(OTHER)
    assert cache.stamp(SCOPE) == before
    cache.invalidate(SCOPE)
    after = cache.stamp(SCOPE)
    assert after.epoch == before.epoch
    assert after.generation == before.generation + 1
    assert isinstance(after, Stamp)


def test_invalidate_drops_only_that_scope() -> None:
    cache = live_cache()
    assert store(cache, "a1", "A1", SCOPE, 10)
    assert store(cache, "b1", "B1", OTHER, 20)
    assert store(cache, "a2", "A2", SCOPE, 30)
    assert stored_bytes(cache) == 60

    cache.invalidate(SCOPE)
    assert cache.fresh("a1") is None
    assert cache.fresh("a2") is None
    assert cache.stale("a1", 60.0) is None
    assert cache.fresh("b1") == "B1"
    assert len(cache) == 1
    assert stored_bytes(cache) == 20
    # Invalidating a scope with nothing cached is harmless.
    cache.invalidate("repo:never/cached")
    assert cache.fresh("b1") == "B1"


def test_replacing_a_key_under_another_scope_moves_it() -> None:
    cache = live_cache()
    assert store(cache, "k", "first", SCOPE, 10)
    assert store(cache, "k", "second", OTHER, 25)
    assert len(cache) == 1
    assert stored_bytes(cache) == 25
    cache.invalidate(SCOPE)
    assert cache.fresh("k") == "second"
    cache.invalidate(OTHER)
    assert cache.fresh("k") is None
    assert stored_bytes(cache) == 0


# -- TTL and size bounds -------------------------------------------------------


def test_entries_expire_after_ttl() -> None:
    cache = live_cache(ttl=0.15)
    assert store(cache, "k", "v")
    assert cache.fresh("k") == "v"
    time.sleep(0.2)
    assert cache.fresh("k") is None
    # Expired for fresh hits, still there for stale() within the caller's limit.
    assert cache.stale("k", 60.0) == "v"
    assert cache.stale("k", 0.1) is None


def test_ttl_zero_keeps_nothing() -> None:
    cache = live_cache(ttl=0.0)
    assert store(cache, "k", "v") is False
    assert cache.fresh("k") is None
    assert len(cache) == 0


def test_byte_bound_evicts_least_recently_used() -> None:
    cache = live_cache(max_bytes=100, max_entry=100)
    assert store(cache, "a", "A", size=40)
    assert store(cache, "b", "B", size=40)
    # A hit makes "a" the most recently used, so "b" goes first.
    assert cache.fresh("a") == "A"
    assert store(cache, "c", "C", size=40)
    assert cache.fresh("b") is None
    assert cache.stale("b", 60.0) is None
    assert cache.fresh("a") == "A"
    assert cache.fresh("c") == "C"
    assert stored_bytes(cache) == 80

    # A large newcomer may push out more than one entry.
    assert store(cache, "d", "D", size=70)
    assert stored_bytes(cache) == 70
    assert cache.fresh("d") == "D"
    assert cache.fresh("a") is None
    assert cache.fresh("c") is None
    assert len(cache) == 1


def test_too_big_entries_are_refused() -> None:
    cache = live_cache(max_bytes=1600)
    assert cache.max_entry == 100  # a sixteenth by default
    assert store(cache, "big", "B", size=101) is False
    assert cache.fresh("big") is None
    assert len(cache) == 0
    assert store(cache, "fits", "F", size=100) is True
    assert cache.fresh("fits") == "F"

    explicit = live_cache(max_bytes=1000, max_entry=10)
    assert store(explicit, "k", "v", size=11) is False
    assert store(explicit, "k", "v", size=10) is True
    # A refused replacement leaves the previous answer alone.
    assert store(explicit, "k", "huge", size=11) is False
    assert explicit.fresh("k") == "v"


# -- stale() -------------------------------------------------------------------


def test_stale_serves_within_max_age_after_the_subscription_went_down() -> None:
    cache = live_cache()
    assert store(cache, "k", "v")
    assert store(cache, "other", "o", OTHER)
    cache.events_state(False)
    assert cache.fresh("k") is None
    assert cache.stale("k", 5.0) == "v"
    time.sleep(0.15)
    assert cache.stale("k", 5.0) == "v"
    assert cache.stale("k", 0.1) is None
    assert cache.stale("missing", 5.0) is None
    # An invalidation is news that the answer is wrong: not even stale then.
    cache.invalidate(SCOPE)
    assert cache.stale("k", 5.0) is None
    assert cache.stale("other", 5.0) == "o"


# -- the bound on remembered scopes ----------------------------------------------


def test_max_scopes_overflow_starts_a_new_epoch() -> None:
    cache = live_cache()
    assert store(cache, "k", "v", SCOPE)
    pending = cache.stamp(OTHER)  # asked for before the overflow, never invalidated
    for i in range(event_cache.MAX_SCOPES - 1):
        cache.invalidate(f"repo:filler/{i}")
    # Still within the bound: nothing forgotten yet.
    assert len(cache._generation) == event_cache.MAX_SCOPES - 1
    assert cache.fresh("k") == "v"
    epoch = cache.stamp(SCOPE).epoch

    cache.invalidate("repo:filler/one-more")
    cache.invalidate("repo:filler/and-another")
    assert len(cache._generation) <= event_cache.MAX_SCOPES
    assert cache.stamp(SCOPE).epoch == epoch + 1
    # Forgetting generations must not let an old answer through: everything
    # stored or stamped before is out.
    assert cache.fresh("k") is None
    assert cache.put(pending, OTHER, "o", "late", 10) is False
    assert cache.fresh("o") is None
    # New answers are served again.
    assert store(cache, "k", "v2", SCOPE)
    assert cache.fresh("k") == "v2"


# -- a model of the rules, against random operation sequences ---------------------

KEYS = ("k1", "k2", "k3", "k4")
SCOPES = ("repo:a", "repo:b", "catalog")
MAX_BYTES = 100
MAX_ENTRY = 60

operations = st.lists(
    st.one_of(
        st.tuples(st.just("stamp"), st.sampled_from(SCOPES)),
        st.tuples(st.just("put"), st.integers(0, 20), st.sampled_from(KEYS),
                  st.integers(1, MAX_ENTRY + 10)),
        st.tuples(st.just("invalidate"), st.sampled_from(SCOPES)),
        st.tuples(st.just("state"), st.booleans()),
        st.tuples(st.just("fresh"), st.sampled_from(KEYS)),
        st.tuples(st.just("stale"), st.sampled_from(KEYS)),
    ),
    max_size=80,
)


class Model:
    """The rules of EventCache written out plainly (no TTL: it never expires here)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.live = False
        self.generation: dict[str, int] = {}
        # key -> (scope, value, size, epoch), least recently used first
        self.entries: OrderedDict[str, tuple[str, str, int, int]] = OrderedDict()

    def bytes(self) -> int:
        return sum(size for _, _, size, _ in self.entries.values())

    def events_state(self, live: bool) -> None:
        self.epoch += 1
        self.live = live

    def invalidate(self, scope: str) -> None:
        self.generation[scope] = self.generation.get(scope, 0) + 1
        for key in [k for k, e in self.entries.items() if e[0] == scope]:
            del self.entries[key]

    def stamp(self, scope: str) -> tuple[int, int]:
        return self.epoch, self.generation.get(scope, 0)

    def put(self, stamp: tuple[int, int], scope: str, key: str, value: str,
            size: int) -> bool:
        if size > MAX_ENTRY or stamp != self.stamp(scope):
            return False
        self.entries.pop(key, None)
        self.entries[key] = (scope, value, size, stamp[0])
        while self.bytes() > MAX_BYTES:
            self.entries.popitem(last=False)
        return True

    def fresh(self, key: str) -> str | None:
        entry = self.entries.get(key)
        if entry is None or not self.live or entry[3] != self.epoch:
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def stale(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[1]


@PROPERTY
@given(ops=operations, start_live=st.booleans())
def test_random_operations_never_serve_an_invalidated_answer(
        ops: list[tuple], start_live: bool) -> None:
    cache: EventCache[str] = EventCache(ttl=3600.0, max_bytes=MAX_BYTES, max_entry=MAX_ENTRY)
    model = Model()
    # Independent of the model: how many times each scope was invalidated and
    # how many state changes there were, and those counts at each value's stamp.
    invalidations = dict.fromkeys(SCOPES, 0)
    state_changes = 0
    stamped_at: dict[str, tuple[str, int, int]] = {}
    pending: list[tuple[str, Stamp, tuple[int, int], int, int]] = []
    values = (f"v{i}" for i in itertools.count())
    if start_live:
        ops = [("state", True), *ops]

    for op in ops:
        kind = op[0]
        if kind == "stamp":
            scope = op[1]
            pending.append((scope, cache.stamp(scope), model.stamp(scope),
                            invalidations[scope], state_changes))
        elif kind == "put":
            _, index, key, size = op
            if pending:
                scope, stamp, model_stamp, inv, changes = pending[index % len(pending)]
            else:
                scope = SCOPES[index % len(SCOPES)]
                stamp, model_stamp = cache.stamp(scope), model.stamp(scope)
                inv, changes = invalidations[scope], state_changes
            value = next(values)
            stamped_at[value] = (scope, inv, changes)
            accepted = cache.put(stamp, scope, key, value, size)
            assert accepted == model.put(model_stamp, scope, key, value, size)
            # Accepted only when nothing moved since the stamp, and when it fits.
            if accepted:
                assert size <= MAX_ENTRY
                assert invalidations[scope] == inv and state_changes == changes
        elif kind == "invalidate":
            cache.invalidate(op[1])
            model.invalidate(op[1])
            invalidations[op[1]] += 1
        elif kind == "state":
            cache.events_state(op[1])
            model.events_state(op[1])
            state_changes += 1
        elif kind == "fresh":
            got = cache.fresh(op[1])
            assert got == model.fresh(op[1])
            if got is not None:
                scope, inv, changes = stamped_at[got]
                assert invalidations[scope] == inv, f"{got} served after {scope} changed"
                assert state_changes == changes, f"{got} served from an earlier epoch"
                assert cache.live
        else:
            got = cache.stale(op[1], 3600.0)
            assert got == model.stale(op[1])
            if got is not None:
                scope, inv, _ = stamped_at[got]
                assert invalidations[scope] == inv, f"{got} stale after {scope} changed"

        assert stored_bytes(cache) <= MAX_BYTES
        assert stored_bytes(cache) == model.bytes()
        assert len(cache) == len(model.entries)


@pytest.mark.parametrize("live", [True, False])
def test_model_agrees_on_a_known_sequence(live: bool) -> None:
    """A fixed sequence through both, so the model itself is seen to do something."""
    cache: EventCache[str] = EventCache(ttl=3600.0, max_bytes=MAX_BYTES, max_entry=MAX_ENTRY)
    model = Model()
    cache.events_state(live)
    model.events_state(live)
    early = cache.stamp("repo:a"), model.stamp("repo:a")
    cache.invalidate("repo:a")
    model.invalidate("repo:a")
    assert cache.put(early[0], "repo:a", "k1", "x", 5) is model.put(early[1], "repo:a", "k1",
                                                                      "x", 5) is False
    now = cache.stamp("repo:a"), model.stamp("repo:a")
    assert cache.put(now[0], "repo:a", "k1", "y", 5) is model.put(now[1], "repo:a", "k1",
                                                                   "y", 5) is True
    expected = "y" if live else None
    assert cache.fresh("k1") == model.fresh("k1") == expected
