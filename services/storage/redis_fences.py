"""The collector's fences where storage has no shared disk: an object store.

`fences` rests on what a shared filesystem gives every process: file mtimes
stamped by one kernel clock, and flocks released when their holder dies. A
bucket has neither (an object's time is its creation, and S3 has no lock
that survives a dead holder cheaply), so here the mechanisms live in the
index's Redis, which every replica already shares, and its one clock
(``TIME``, read inside the scripts) stamps everything. The same three
guarantees `services.gc.collector` argues from hold:

1. **Touch.** Before a writer writes a key the collector may delete (a blob,
   a layer or manifest link) or relies on one existing, it records the key's
   touch time in ``gc:touched`` (a sorted set). The same script reports
   whether the key is *doomed* (below) and the current *epoch*.
2. **Doom, instead of an exclusive stripe.** The collector, in one script per
   batch, dooms those of its candidates that no writer touched since the
   cutoff (the touch time here, else the object's own last write, for
   objects older than these records) and bumps the epoch; then deletes them
   from the store; then lifts the doom. Redis runs each script alone, so a
   touch and a doom of one key are ordered: either the touch came first and
   the collector keeps the key, or the doom came first, the writer waits
   until the doom is lifted (or its lease ran out), and then finds the key
   gone: it writes it again, or answers as if it never existed.
3. **Epoch.** A value moved when a doom is laid and again when it is lifted,
   after the delete, each time to one it never had (past the last, and no
   less than the time, so a Redis restored from an older state does not hand
   an old value out again). A replica that remembers what exists
   (`S3Backend`'s blob sizes) tags each answer with the epoch it knew before
   asking the store, and forgets everything when a touch reports a newer
   epoch: an answer from before a delete carries an epoch older than the
   lift, and every touch after the lift reports at least the lift's, so a
   remembered "exists" never outlives a delete for a writer relying on it.
4. **The barrier.** A manifest PUT registers in ``gc:inflight`` from before
   its first touch until the index recorded it (`writing`). The collector's
   `barrier` reads the run's start time *T* and the PUTs registered then, in
   one script, and waits until each of those has left (or its lease ran out).
   A PUT registered after *T* touches only after *T*, so its touches protect
   what it relies on; a PUT registered before is in the index when the
   barrier returns. Nothing waits on the barrier: no gate holds new PUTs, so
   a collector killed during it, or a registration left by a storage replica
   killed mid-PUT, delays only the collection, never a push.

**Leases, not kernel locks.** A writer's registration, a doom and the
collection's own lock each carry an expiry, so a holder killed with -9
blocks others for at most its lease. The collector checks that a doom is
still within its lease before each delete; a collector paused for longer
than a lease between that check and the delete is the one case these
fences do not cover (the filesystem's flocks do), which is why the leases
are long (a minute) against a delete of at most a second.

**Replication.** With ``index.redis.min_replicas_ack``, every touch and doom
waits for the replicas as the index's writes do, so a failover loses none.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from services.storage.fences import Listed
from shared import errors, redis_client

# Seconds a doom, a PUT's registration and the collection's lock last unrenewed.
DOOM_LEASE = 60.0
WRITER_LEASE = 120.0
RUN_LEASE = 30.0
# Keys doomed per script and per DeleteObjects call (S3's limit is 1,000).
BATCH = 500
POLL = 0.02
US = 1_000_000

# Moves the epoch to a value it never had: past the last one, and no less than the
# time (µs), so that a Redis restored from an older state (a failover that lost its
# last writes) never hands out again a value some replica saw before.
_MOVE_EPOCH = """
local function move_epoch(key, now)
  local e = math.max(tonumber(redis.call('GET', key) or '0') + 1, now)
  redis.call('SET', key, string.format('%.0f', e))
  return string.format('%.0f', e)
end
"""

# Records the touch; answers {doomed (1/0), epoch}. Times are microseconds.
_TOUCH = _MOVE_EPOCH + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
-- A doom that ran out unlifted (its collector died) moves the epoch as a lift does.
if redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) > 0 then
  move_epoch(KEYS[3], now)
end
local doom = redis.call('ZSCORE', KEYS[2], ARGV[1])
local epoch = redis.call('GET', KEYS[3]) or '0'
if doom then return {1, epoch} end
return {0, epoch}
"""

# ARGV: cutoff (µs, or -1 for none), lease (µs), then key, last write (µs) pairs.
# Answers the keys it doomed and the doom's expiry.
_DOOM = _MOVE_EPOCH + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cutoff = tonumber(ARGV[1])
local expiry = now + tonumber(ARGV[2])
local doomed = {}
for i = 3, #ARGV, 2 do
  local key = ARGV[i]
  local last = tonumber(ARGV[i + 1])
  local touched = redis.call('ZSCORE', KEYS[1], key)
  if touched and tonumber(touched) > last then last = tonumber(touched) end
  if cutoff < 0 or last < cutoff then
    redis.call('ZADD', KEYS[2], expiry, key)
    doomed[#doomed + 1] = key
  end
end
if #doomed > 0 then move_epoch(KEYS[3], now) end
return {doomed, string.format('%.0f', expiry)}
"""

# Lifts a doom (ARGV: the keys) once their deletes are done, and moves the epoch.
_LIFT = _MOVE_EPOCH + """
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], unpack(ARGV))
return move_epoch(KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]))
"""

# Registers a manifest PUT (ARGV: its token, its lease in µs).
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# Drops expired registrations; answers the time and the PUTs registered now.
_INFLIGHT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {string.format('%.0f', now), redis.call('ZRANGE', KEYS[1], 0, -1)}
"""

# How many of the PUTs ARGV names are still registered (expired ones dropped).
_PENDING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local left = 0
for i = 1, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then left = left + 1 end
end
return left
"""

# Releases (ARGV[2] == '') or renews a lock held by token ARGV[1].
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class RedisFences:
    """The fences of `fences.Fences`, kept in Redis (see the module's rules).

    `delete_many` removes keys from the store; `epoch` is told the epoch each
    touch saw (rule 3)."""

    def __init__(self, client: redis.Redis, prefix: str, ack: redis_client.ReplicaAck,
                 delete_many: Callable[[list[str]], None],
                 epoch: Callable[[int], None]) -> None:
        self.client = client
        self.ack = ack
        self._delete_many = delete_many
        self._on_epoch = epoch
        self._deadline = 0.0
        self.keys = {name: f"{prefix}gc:{name}"
                     for name in ("touched", "doomed", "epoch", "inflight", "run")}
        self._touch = client.register_script(_TOUCH)
        self._doom = client.register_script(_DOOM)
        self._enter = client.register_script(_ENTER)
        self._inflight = client.register_script(_INFLIGHT)
        self._pending = client.register_script(_PENDING)
        self._release = client.register_script(_RELEASE)
        self._lift = client.register_script(_LIFT)

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script, confirmed by the replicas when configured; Redis's failures
        are the client's 503, as the index's are."""
        try:
            if self.ack.replicas <= 0:
                return script(keys=keys, args=args)
            pipe = self.client.pipeline(transaction=False)
            script(keys=keys, args=args, client=pipe)
            return self.ack.run(pipe)[0]
        except redis.exceptions.RedisError as e:
            raise errors.Unavailable(f"collector fences: {e}", retry_after=2) from None

    def reachable(self) -> bool:
        """Whether Redis answers (storage's /readyz reports it: writes need it)."""
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    # -- writers ---------------------------------------------------------------------

    def touch(self, key: str) -> None:
        """Record that a writer relies on `key` from now; returns once no collection
        is deleting it (afterwards the key exists only if it was not deleted)."""
        k = self.keys
        deadline = time.monotonic() + DOOM_LEASE + 5
        while True:
            # Sent again while doomed: the script also ends a doom that ran out.
            doomed, epoch = self._call(self._touch,
                                       [k["touched"], k["doomed"], k["epoch"]], [key])
            if not int(doomed):
                break
            if time.monotonic() > deadline:
                raise errors.Unavailable(f"collector fences: a collection holds {key}",
                                         retry_after=2)
            time.sleep(POLL)
        self._on_epoch(int(epoch))

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held by a manifest PUT from its first touch until the index recorded it."""
        token = uuid.uuid4().hex
        inflight = self.keys["inflight"]
        self._call(self._enter, [inflight], [token, int(WRITER_LEASE * US)])
        try:
            yield
        finally:
            with contextlib.suppress(redis.exceptions.RedisError):
                self.client.zrem(inflight, token)

    @contextlib.contextmanager
    def blob(self, digest: Any, *, exclusive: bool = False) -> Iterator[None]:
        """No stripe to take: each touch is fenced by itself (rule 2)."""
        yield

    # -- the collector ---------------------------------------------------------------

    def barrier(self) -> int:
        """The run's start time *T*, in nanoseconds of Redis's clock, once every
        manifest PUT registered at *T* has its index record (rule 4)."""
        inflight = self.keys["inflight"]
        now, registered = self._call(self._inflight, [inflight], [])
        while registered and int(self._call(self._pending, [inflight], registered)):
            time.sleep(POLL)
        return int(now) * 1000

    @contextlib.contextmanager
    def collecting(self, wait: bool = False) -> Iterator[bool]:
        """One collection at a time for every replica sharing the bucket."""
        key, token = self.keys["run"], uuid.uuid4().hex
        while not self.client.set(key, token, nx=True, px=int(RUN_LEASE * 1000)):
            if not wait:
                yield False
                return
            time.sleep(0.5)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(RUN_LEASE / 3):
                with contextlib.suppress(redis.exceptions.RedisError):
                    self._release(keys=[key], args=[token, int(RUN_LEASE * 1000)])

        renewer = threading.Thread(target=renew, name="gc-run-lease", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(redis.exceptions.RedisError):
                self._release(keys=[key], args=[token, ""])

    @contextlib.contextmanager
    def claim(self, items: Sequence[Listed], cutoff: int | None,
              locks: Sequence[str] = ()) -> Iterator[list[bool]]:
        """Doom those of `items` untouched since `cutoff` (all when None) and say
        which; delete them inside, then the doom is lifted. `locks` are the
        filesystem's (`fences.Fences.claim`): a doom excludes every writer of a key."""
        k = self.keys
        args: list[Any] = [-1 if cutoff is None else cutoff // 1000, int(DOOM_LEASE * US)]
        for item in items:
            args += [item.key, item.mtime_ns // 1000]
        doomed, _expiry = self._call(self._doom, [k["touched"], k["doomed"], k["epoch"]],
                                    args) if items else ([], b"0")
        names = {d.decode() if isinstance(d, bytes) else d for d in doomed}
        self._deadline = time.monotonic() + DOOM_LEASE - 10
        try:
            yield [item.key in names for item in items]
        finally:
            if names:
                # Lifted only here, after the deletes: a writer waiting on the doom
                # then finds the keys gone, and the epoch has moved (rule 3). When
                # Redis fails, the doom runs out by itself.
                with contextlib.suppress(errors.Unavailable):
                    self._call(self._lift, [k["doomed"], k["epoch"]], sorted(names))


    def remove_all_if_untouched(self, items: Sequence[Listed],
                                cutoff: int) -> list[int | None]:
        """Delete every item untouched since `cutoff`; per item, its bytes or None."""
        result: list[int | None] = []
        for i in range(0, len(items), BATCH):
            batch = items[i:i + BATCH]
            with self.claim(batch, cutoff) as ok:
                self.delete_claimed([item.key for item, yes in zip(batch, ok, strict=True)
                                     if yes])
            result += [item.size if yes else None
                       for item, yes in zip(batch, ok, strict=True)]
        return result

    def delete_claimed(self, keys: list[str]) -> None:
        """Delete keys `claim` doomed, inside the claim, while the doom is in force."""
        if not keys:
            return
        if time.monotonic() > self._deadline:
            raise errors.Unavailable("collector fences: a doom ran out before the delete",
                                     retry_after=2)
        self._delete_many(keys)

    def prune(self, before_ns: int) -> None:
        """Forget touches older than `before_ns`: an object untouched since then
        compares by its own last write, which is no later."""
        with contextlib.suppress(redis.exceptions.RedisError):
            self.client.zremrangebyscore(self.keys["touched"], "-inf", before_ns // 1000)
