"""The collector's fences on an object store (`services.storage.redis_fences`), on a
real redis-server, and with `S3Backend` on a real SeaweedFS bucket.

Each test states one rule of the module's docstring and would fail if its mechanism
were broken: a touch and a doom ordered by Redis, the epoch that keeps a replica's
remembered blob sizes honest, the barrier, the run lock, and the leases that let a
holder killed with -9 block others only for a while. Holders that are "killed" are
real processes sent SIGKILL; shortened leases are the module's own constants, set
smaller (configuration, not a mock).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.storage import redis_fences
from services.storage.backends.base import ObjectInfo
from services.storage.redis_fences import RedisFences
from shared import errors
from shared.redis_client import ReplicaAck
from tests.support.processes import RedisServer

BLOB = "blobs/sha256/ab/"


def blob_key(name: str) -> str:
    return BLOB + name


class Side:
    """One process's fences on the shared Redis: what its deletes removed and the
    epochs its touches reported."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.deleted: list[str] = []
        self.epochs: list[int] = []
        self.fences = RedisFences(self.client, prefix, ReplicaAck(), self.deleted.extend,
                                  self.epochs.append)

    def epoch_after_touch(self, key: str = blob_key("elsewhere")) -> int:
        self.fences.touch(key)
        return self.epochs[-1]

    def redis_now_ns(self) -> int:
        seconds, micros = self.client.time()
        return (seconds * 1_000_000 + micros) * 1000


@pytest.fixture
def sides(redis_server: RedisServer, prefix: str) -> Callable[[], Side]:
    return lambda: Side(redis_server.url, prefix)


def listed(key: str, mtime_ns: int = 0, size: int = 1) -> ObjectInfo:
    return ObjectInfo(key, size, mtime_ns)


# -- a holder killed with -9 ----------------------------------------------------------

_HOLDER = """
import sys, time, redis
from services.storage import redis_fences as rf
from services.storage.backends.base import ObjectInfo
from shared.redis_client import ReplicaAck
url, prefix, what, key, lease = sys.argv[1:6]
rf.DOOM_LEASE = rf.WRITER_LEASE = float(lease)
f = rf.RedisFences(redis.Redis.from_url(url), prefix, ReplicaAck(), lambda k: None,
                   lambda e: None)
held = f.claim([ObjectInfo(key, 1, 0)], None) if what == "doom" else f.writing()
held.__enter__()
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
def killed_holder(redis_server: RedisServer, prefix: str) -> Iterator[Callable[..., None]]:
    """Starts a process that dooms `key` (``doom``) or registers a manifest PUT
    (``writing``) with leases of `lease` seconds, and kills it with SIGKILL once it
    holds, so nothing of it is ever released."""
    procs: list[subprocess.Popen[str]] = []

    def hold(what: str, key: str, lease: float) -> None:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, redis_server.url, prefix,
                                 what, key, str(lease)], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).parents[2])
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- touch and doom ---------------------------------------------------------------------


def rely_during_doom(fences: RedisFences, items: list[Any], cutoff: int,
                     rely: Callable[[], Any]) -> tuple[Any, float, float]:
    """Doom `items` (all of them must be), run `rely` in a thread while the doom is in
    force, check it waits, delete, lift. Returns what `rely` answered, when it
    returned and when the lift began."""
    answers: list[tuple[Any, float]] = []
    thread = threading.Thread(target=lambda: answers.append((rely(), time.monotonic())))
    with fences.claim(items, cutoff) as doomed:
        assert all(doomed) and doomed
        thread.start()
        time.sleep(0.5)
        assert not answers, "a writer relied on a doomed key before the lift"
        fences.delete_claimed([item.key for item in items])
        lifting = time.monotonic()
    thread.join(10)
    assert answers, "a writer still waits after the lift"
    return answers[0][0], answers[0][1], lifting


def test_a_touch_since_the_cutoff_keeps_the_key_and_nothing_else_does(
        sides: Callable[[], Side]) -> None:
    writer, collector = sides(), sides()
    writer.fences.touch(blob_key("touched-before-the-cutoff"))
    cutoff = collector.fences.barrier()
    writer.fences.touch(blob_key("touched"))
    items = [listed(blob_key("touched")), listed(blob_key("untouched")),
             listed(blob_key("touched-before-the-cutoff")),
             # Its own last write (an object older than these records) since the cutoff.
             listed(blob_key("written-since"), mtime_ns=cutoff + 1000)]
    with collector.fences.claim(items, cutoff) as doomed:
        assert doomed == [False, True, True, False]
        collector.fences.delete_claimed([i.key for i, d in zip(items, doomed, strict=True)
                                         if d])
    assert collector.deleted == [blob_key("untouched"), blob_key("touched-before-the-cutoff")]
    # Doom lifted: the same keys can be touched without waiting.
    started = time.monotonic()
    writer.fences.touch(blob_key("untouched"))
    assert time.monotonic() - started < 1.0


def test_a_touch_after_the_doom_waits_for_the_lift(sides: Callable[[], Side]) -> None:
    writer, collector = sides(), sides()
    key = blob_key("doomed")
    cutoff = collector.fences.barrier()
    _, returned, lifting = rely_during_doom(collector.fences, [listed(key)], cutoff,
                                            lambda: writer.fences.touch(key))
    assert returned >= lifting
    assert collector.deleted == [key]


def test_the_epoch_moves_at_the_doom_and_at_the_lift(sides: Callable[[], Side]) -> None:
    writer, collector = sides(), sides()
    before = writer.epoch_after_touch()
    cutoff = collector.fences.barrier()
    with collector.fences.claim([listed(blob_key("a"))], cutoff) as doomed:
        assert doomed == [True]
        at_doom = writer.epoch_after_touch()
        assert at_doom > before
    lifted = writer.epoch_after_touch()
    assert lifted > at_doom
    # Never a value Redis could hand out again after losing its last writes: at
    # least the time, in microseconds.
    assert lifted >= writer.redis_now_ns() // 1000 - 5_000_000
    # A claim that dooms nothing (the key was touched since) leaves the epoch alone.
    writer.fences.touch(blob_key("kept"))
    with collector.fences.claim([listed(blob_key("kept"))], cutoff) as doomed:
        assert doomed == [False]
    assert writer.epoch_after_touch() == lifted


def test_the_doom_of_a_killed_collector_runs_out_and_moves_the_epoch(
        sides: Callable[[], Side], killed_holder: Callable[..., None], prefix: str) -> None:
    writer = sides()
    key = blob_key("doomed-by-the-dead")
    before = writer.epoch_after_touch()
    killed_holder("doom", key, 2.0)
    doomed_epoch = writer.epoch_after_touch()
    assert doomed_epoch > before
    expiry_us = writer.client.zscore(f"{prefix}gc:doomed", key)
    assert expiry_us is not None, "the killed collector's doom is not in force"
    left = expiry_us / 1e6 - writer.redis_now_ns() / 1e9
    assert left > 0.5
    started = time.monotonic()
    writer.fences.touch(key)
    waited = time.monotonic() - started
    # It waited until the lease ran out, no longer than that plus a poll or two.
    assert left - 0.1 <= waited < left + 2.0, (left, waited)
    # The doom ended unlifted: the touch that saw it end moved the epoch, as a lift does.
    ended = writer.epochs[-1]
    assert ended > doomed_epoch
    assert writer.client.zscore(f"{prefix}gc:doomed", key) is None
    started = time.monotonic()
    assert writer.epoch_after_touch(key) == ended
    assert time.monotonic() - started < 1.0


def test_a_delete_is_refused_once_the_doom_may_have_run_out(
        sides: Callable[[], Side], monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector stops deleting 10 s before the doom's lease ends (the margin
    # against a pause); a lease of 10.4 s leaves it 0.4 s.
    monkeypatch.setattr(redis_fences, "DOOM_LEASE", 10.4)
    collector = sides()
    with pytest.raises(errors.Unavailable), \
            collector.fences.claim([listed(blob_key("late"))], None) as doomed:
        assert doomed == [True]
        time.sleep(0.6)
        collector.fences.delete_claimed([blob_key("late")])
    assert collector.deleted == []
    # The doom was lifted all the same.
    started = time.monotonic()
    collector.fences.touch(blob_key("late"))
    assert time.monotonic() - started < 1.0


# -- the barrier ------------------------------------------------------------------------


def test_the_barrier_waits_for_the_puts_registered_at_its_start_only(
        sides: Callable[[], Side]) -> None:
    writer, late_writer, collector = sides(), sides(), sides()
    inside, release = threading.Event(), threading.Event()
    late_inside, late_release = threading.Event(), threading.Event()
    passed: list[tuple[int, float]] = []

    def put(side: Side, entered: threading.Event, leave: threading.Event) -> None:
        with side.fences.writing():
            entered.set()
            leave.wait(10)

    def collect() -> None:
        passed.append((collector.fences.barrier(), time.monotonic()))

    first = threading.Thread(target=put, args=(writer, inside, release))
    first.start()
    assert inside.wait(5)
    before = collector.redis_now_ns()
    barrier = threading.Thread(target=collect)
    barrier.start()
    time.sleep(0.3)
    assert not passed, "the barrier passed a PUT between its first touch and its record"
    # A PUT that starts now is not held back, and does not hold the barrier back.
    second = threading.Thread(target=put, args=(late_writer, late_inside, late_release))
    second.start()
    assert late_inside.wait(1.0), "a PUT waited for the barrier"
    late_writer.fences.touch(blob_key("touched-by-the-late-put"))
    released = time.monotonic()
    release.set()
    barrier.join(10)
    first.join(10)
    assert passed, "the barrier waited for a PUT registered after it began"
    start, returned = passed[0]
    assert returned >= released
    # T is of the clock that stamps touches, taken when the barrier began: the late
    # PUT, registered after it, touched after it, and its touches protect.
    assert before <= start
    with collector.fences.claim([listed(blob_key("touched-by-the-late-put"))], start) as ok:
        assert ok == [False]
    late_release.set()
    second.join(10)


def test_a_killed_puts_registration_blocks_the_barrier_only_for_its_lease(
        sides: Callable[[], Side], killed_holder: Callable[..., None], prefix: str) -> None:
    collector = sides()
    killed_holder("writing", "", 2.0)
    assert collector.client.zcard(f"{prefix}gc:inflight") == 1
    (expiry,) = collector.client.zrange(f"{prefix}gc:inflight", 0, 0, withscores=True)
    left = expiry[1] / 1e6 - collector.redis_now_ns() / 1e9
    assert left > 0.5
    started = time.monotonic()
    barrier = threading.Thread(target=collector.fences.barrier, daemon=True)
    barrier.start()
    barrier.join(left + 5)
    waited = time.monotonic() - started
    assert not barrier.is_alive(), "a dead PUT's registration blocks the barrier for good"
    assert left - 0.1 <= waited < left + 2.0, (left, waited)
    assert collector.client.zcard(f"{prefix}gc:inflight") == 0


# -- one collection at a time -----------------------------------------------------------


def test_one_collection_at_a_time_with_a_renewed_lease(
        sides: Callable[[], Side], prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_fences, "RUN_LEASE", 0.6)
    first, second = sides(), sides()
    run_key = f"{prefix}gc:run"
    with first.fences.collecting() as ours:
        assert ours
        deadline = time.monotonic() + 2.0      # more than three leases
        refused = 0
        while time.monotonic() < deadline:
            with second.fences.collecting() as theirs:
                assert not theirs, "two collections held the run lock at once"
                refused += 1
            time.sleep(0.1)
        assert refused >= 10
        assert 0 < first.client.pttl(run_key) <= 600
    assert first.client.exists(run_key) == 0
    with second.fences.collecting() as theirs:
        assert theirs
        with first.fences.collecting() as ours:
            assert not ours


def test_a_waiting_collection_starts_when_the_holder_releases(
        sides: Callable[[], Side], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_fences, "RUN_LEASE", 0.6)
    first, second = sides(), sides()
    started: list[float] = []

    def wait_for_it() -> None:
        with second.fences.collecting(wait=True) as theirs:
            assert theirs
            started.append(time.monotonic())

    with first.fences.collecting() as ours:
        assert ours
        thread = threading.Thread(target=wait_for_it)
        thread.start()
        time.sleep(1.5)
        assert not started
        released = time.monotonic()
    thread.join(5)
    assert started and started[0] >= released


# -- hypothesis: touches and collections in any order -----------------------------------

KEYS = [blob_key(f"k{i}") for i in range(3)]
STEP = st.one_of(st.tuples(st.just("touch"), st.sampled_from(KEYS)),
                 st.tuples(st.just("cutoff"), st.none()),
                 # Doom with the cutoff taken this many cutoffs ago (a grace period).
                 st.tuples(st.just("collect"), st.integers(0, 2)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=14))
def test_a_key_is_deleted_only_when_untouched_between_cutoff_and_doom(
        redis_server: RedisServer, steps: list[tuple[str, Any]]) -> None:
    side = Side(redis_server.url, f"prop-{uuid.uuid4().hex[:12]}:")
    cutoffs: list[tuple[int, int]] = []       # (T, the step it was taken at)
    touched_at: dict[str, list[int]] = {k: [] for k in KEYS}
    epoch = side.epoch_after_touch(blob_key("probe"))
    for n, (op, arg) in enumerate(steps):
        if op == "touch":
            side.fences.touch(arg)
            touched_at[arg].append(n)
            epoch_now = side.epochs[-1]
            assert epoch_now == epoch, "a touch moved the epoch with no doom in force"
        elif op == "cutoff":
            cutoffs.append((side.fences.barrier(), n))
        elif cutoffs:
            cutoff, taken = cutoffs[-1 - min(arg, len(cutoffs) - 1)]
            with side.fences.claim([listed(k) for k in KEYS], cutoff) as doomed:
                expected = [not any(taken < t for t in touched_at[k]) for k in KEYS]
                assert doomed == expected, (steps, n)
                side.fences.delete_claimed([k for k, d in zip(KEYS, doomed, strict=True)
                                            if d])
            now = side.epoch_after_touch(blob_key("probe"))
            assert now > epoch if any(expected) else now == epoch
            epoch = now
    side.client.close()


# -- S3Backend on a real bucket ---------------------------------------------------------


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer,
             prefix: str) -> Callable[[], Any]:
    """A factory of `S3Backend`s on one bucket and one Redis: each call is another
    storage replica (or the collector) with its own memory of blob sizes."""
    from tests.support.seaweedfs import require

    require()
    from services.storage.backends.s3 import S3Backend

    access = request.getfixturevalue("seaweedfs").access
    bucket = request.getfixturevalue("s3_bucket")
    cfg = {**access.storage_config(bucket, "registry/"), "part_size": 5 << 20,
           "timeout": 10.0, "redirect": False, "verify_tls": True}
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def replica(endpoint: str | None = None) -> Any:
        client = redis.Redis.from_url(redis_server.url)
        return S3Backend({**cfg, "endpoint": endpoint or cfg["endpoint"]}, scratch,
                         fences=lambda delete, epoch: RedisFences(
                             client, prefix, ReplicaAck(), delete, epoch))

    return replica


def blobs_in(backend: Any) -> dict[str, ObjectInfo]:
    return {o.key: o for o in backend.list("blobs/")}


def write_then_cutoff(writer: Any, collector: Any, blobs: dict[str, bytes]) -> int:
    """Write `blobs` (touched first, as every write is), then take a collection's T,
    past the objects' own times (S3 gives those to the second)."""
    for key, data in blobs.items():
        writer.put(key, data)
    time.sleep(1.1)
    return int(collector.fences.barrier())


def test_s3_a_size_remembered_before_another_replicas_delete_is_not_trusted(
        replicas: Callable[[], Any]) -> None:
    writer, collector = replicas(), replicas()
    key = blob_key("remembered")
    cutoff = write_then_cutoff(writer, collector, {key: b"twelve bytes"})
    assert writer.stat(key).size == 12           # now remembered by this replica
    assert collector.fences.remove_all_if_untouched(list(blobs_in(collector).values()),
                                                    cutoff) == [12]
    assert key not in blobs_in(collector)
    # A pull may still answer from memory, but no writer relies on it: the touch
    # reports the epoch the delete moved, and the memory is gone.
    assert writer.stat(key) is not None
    assert writer.touch(key) is False
    assert writer.stat(key) is None


def test_s3_a_head_answered_during_a_doom_is_not_remembered_past_the_lift(
        replicas: Callable[[], Any]) -> None:
    writer, collector = replicas(), replicas()
    key = blob_key("asked-during-the-doom")
    cutoff = write_then_cutoff(writer, collector, {key: b"bytes"})
    with collector.fences.claim(list(blobs_in(collector).values()), cutoff) as doomed:
        assert doomed == [True]
        # This replica learns of the doom's epoch through a touch of another key,
        # then asks the store while the object is still there.
        writer.fences.touch(blob_key("another"))
        assert writer.stat(key).size == 5
        collector.fences.delete_claimed([key])
    assert writer.touch(key) is False


def test_s3_a_writer_waits_for_the_doom_and_then_finds_the_blob_gone(
        replicas: Callable[[], Any]) -> None:
    writer, collector = replicas(), replicas()
    key = blob_key("contested")
    cutoff = write_then_cutoff(writer, collector, {key: b"contested"})
    assert writer.stat(key) is not None
    exists, returned, lifting = rely_during_doom(
        collector.fences, list(blobs_in(collector).values()), cutoff,
        lambda: writer.touch(key))
    assert exists is False and returned >= lifting
    # Writing it again brings it back, and this time it stays through a collection
    # with the same cutoff.
    writer.put(key, b"contested")
    assert writer.touch(key) is True
    assert collector.fences.remove_all_if_untouched(list(blobs_in(collector).values()),
                                                    cutoff) == [None]
    assert key in blobs_in(collector)


def test_s3_remove_all_if_untouched_deletes_exactly_the_untouched(
        replicas: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_fences, "BATCH", 2)     # several dooms, several deletes
    writer, collector = replicas(), replicas()
    blobs = {blob_key(f"b{i}"): os.urandom(10 + i) for i in range(5)}
    cutoff = write_then_cutoff(writer, collector, blobs)
    touched = {blob_key("b1"), blob_key("b4")}
    for key in touched:
        assert writer.touch(key)
    items = sorted(blobs_in(collector).values(), key=lambda o: o.key)
    assert [o.key for o in items] == sorted(blobs)
    sizes = collector.fences.remove_all_if_untouched(items, cutoff)
    assert sizes == [None if o.key in touched else len(blobs[o.key]) for o in items]
    assert set(blobs_in(collector)) == touched
    for key in touched:
        assert writer.read(key) == blobs[key]


def test_s3_a_replica_forgets_when_the_epoch_goes_back(
        replicas: Callable[[], Any], redis_server: RedisServer, prefix: str) -> None:
    """Redis restored from an older state (a failover that lost its last writes, a
    restart without its AOF) moves the epoch back; a replica that saw a later one
    must still forget what it remembered when the next collection deletes."""
    writer, collector = replicas(), replicas()
    key = blob_key("deleted-after-the-restore")
    write_then_cutoff(writer, collector, {key: b"bytes"})
    for i in range(2):     # two collections that delete something
        with collector.fences.claim([listed(blob_key(f"earlier{i}"))], None) as doomed:
            assert doomed == [True]
    assert writer.touch(key) is True       # sees their epoch, and remembers the size
    assert writer.stat(key) is not None
    cutoff = collector.fences.barrier()    # a later collection, the key untouched since
    # Redis restored from before those collections: the epoch as it was at the start.
    redis.Redis.from_url(redis_server.url).delete(f"{prefix}gc:epoch")
    assert collector.fences.remove_all_if_untouched(list(blobs_in(collector).values()),
                                                    cutoff) == [5]
    assert key not in blobs_in(collector)
    assert writer.touch(key) is False


class SlowLink:
    """A TCP relay in front of the object store whose answers can be held back: a
    request goes through and is answered, but the answer reaches the client only
    once `flow` is set (a slow network on the way back)."""

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.flow = threading.Event()
        self.flow.set()
        self.held = threading.Event()      # an answer is waiting in the relay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if answers and not self.flow.is_set():
                    self.held.set()
                    self.flow.wait(30)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.flow.set()
        self.listener.close()


def test_s3_a_head_answered_before_a_delete_but_received_after_the_lift_is_not_kept(
        replicas: Callable[[], Any], seaweedfs: Any) -> None:
    """The race `stat` guards against with the epoch it read before asking: the
    answer was true when the store gave it, and stale by the time it arrives."""
    link = SlowLink(seaweedfs.access.endpoint)
    try:
        writer, collector = replicas(link.endpoint), replicas()
        key = blob_key("answer-in-flight")
        cutoff = write_then_cutoff(writer, collector, {key: b"in flight"})
        writer.fences.touch(blob_key("another"))
        link.flow.clear()
        asked: list[Any] = []
        head = threading.Thread(target=lambda: asked.append(writer.stat(key)))
        head.start()
        assert link.held.wait(10), "the store did not answer the HEAD"
        # The store said "exists"; before the answer arrives, a collection deletes
        # the blob, and this replica's next touch sees the lift's epoch.
        assert collector.fences.remove_all_if_untouched(
            list(blobs_in(collector).values()), cutoff) == [9]
        writer.fences.touch(blob_key("another"))
        link.flow.set()
        head.join(10)
        assert asked and asked[0] is not None and asked[0].size == 9
        assert writer.stat(key) is None, "a stale answer was remembered past the lift"
        assert writer.touch(key) is False
    finally:
        link.close()
