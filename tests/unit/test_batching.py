"""shared.batching.Batcher: every item sent exactly once, by the call that carried it."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.batching import Batcher


def test_alone_each_item_is_its_own_call() -> None:
    calls: list[list[int]] = []
    batcher = Batcher(calls.append)
    for i in range(5):
        batcher.submit(i)
    assert calls == [[0], [1], [2], [3], [4]]


def test_items_that_arrive_during_a_call_share_the_next() -> None:
    calls: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()

    def send(items: list[int]) -> None:
        calls.append(items)
        if items == [0]:
            first_started.set()
            release.wait(5)

    batcher = Batcher(send)
    threads = [threading.Thread(target=batcher.submit, args=(0,))]
    threads[0].start()
    assert first_started.wait(5)
    for i in range(1, 6):
        t = threading.Thread(target=batcher.submit, args=(i,))
        t.start()
        threads.append(t)
    # All five wait for the call in flight ...
    deadline = time.monotonic() + 5
    while len(batcher._pending) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(5)
    # ... and then go together, in arrival order.
    assert calls[0] == [0]
    assert calls[1] == [1, 2, 3, 4, 5]
    assert len(calls) == 2


def test_an_error_reaches_exactly_the_items_of_its_call() -> None:
    def send(items: list[int]) -> None:
        if 3 in items:
            raise ConnectionError("down")

    batcher = Batcher(send)
    batcher.submit(1)
    with pytest.raises(ConnectionError):
        batcher.submit(3)
    batcher.submit(4)  # the next call goes out and succeeds


@settings(max_examples=25, deadline=None)
@given(threads=st.integers(1, 12), per_thread=st.integers(1, 20),
       max_batch=st.integers(1, 8), failing=st.sets(st.integers(0, 239), max_size=5))
def test_concurrent_items_are_sent_exactly_once(threads: int, per_thread: int, max_batch: int,
                                                 failing: set[int]) -> None:
    sent: list[int] = []
    in_flight = []
    lock = threading.Lock()

    def send(items: list[int]) -> None:
        with lock:
            in_flight.append(1)
            assert len(in_flight) == 1, "two calls at once"
        assert 1 <= len(items) <= max_batch
        time.sleep(0.0005)
        with lock:
            sent.extend(items)
            in_flight.pop()
        if failing & set(items):
            raise ConnectionError("this call failed")

    batcher = Batcher(send, max_batch=max_batch)
    outcomes: dict[int, bool] = {}

    def worker(n: int) -> None:
        for j in range(per_thread):
            item = n * per_thread + j
            try:
                batcher.submit(item)
                outcomes[item] = True
            except ConnectionError:
                outcomes[item] = False

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    everything = set(range(threads * per_thread))
    assert sorted(sent) == sorted(everything)
    assert set(outcomes) == everything
    # An item failed exactly when a failing item rode in the same call; an item
    # that is itself failing always fails.
    for item in failing & everything:
        assert outcomes[item] is False
