"""One endpoint's view of the event stream: its consumer group and its dead letters.

Every call is one Redis command or one MULTI, so a dispatcher killed between
two of them leaves the queue consistent: an entry is pending (and will be
delivered again) until XACK, and dead-lettering is XADD and XACK in one MULTI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.user_events import (
    FIELD_EVENT,
    FIELD_ONLY,
    UserEventGroups,
    dead_letter_key,
    stream_key,
)

# Dead letters are for operators to look at and replay; past this many the
# oldest go (approximately, as Redis trims whole nodes).
DEAD_LETTER_MAX = 100_000


@dataclass(frozen=True)
class Entry:
    id: str
    event: str  # distribution's JSON of one event
    only: str = ""  # a replayed dead letter: the one endpoint it is for

    @property
    def recorded_ms(self) -> int:
        """When the event was queued: a stream id starts with Redis's clock in ms."""
        return int(self.id.split("-", 1)[0])

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - self.recorded_ms / 1000


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _entries(raw: list[Any]) -> tuple[list[Entry], list[str]]:
    """Stream entries, and the ids of those trimmed away meanwhile (no fields)."""
    entries, gone = [], []
    for entry_id, fields in raw:
        if not fields or FIELD_EVENT.encode() not in fields:
            gone.append(_text(entry_id))
            continue
        entries.append(Entry(_text(entry_id), _text(fields[FIELD_EVENT.encode()]),
                             _text(fields.get(FIELD_ONLY.encode(), b""))))
    return entries, gone


class EndpointQueue:
    def __init__(self, client: redis.Redis, prefix: str, endpoint: str, consumer: str) -> None:
        self.client = client
        self.stream = stream_key(prefix)
        self.dead = dead_letter_key(prefix, endpoint)
        self.group = endpoint
        self.consumer = consumer
        self.groups = UserEventGroups(client, self.stream, (endpoint,))
        self._claim_cursor = "0-0"

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        try:
            answer = self.client.xreadgroup(self.group, self.consumer, {self.stream: start},
                                            count=count, block=block_ms)
        except redis.exceptions.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.groups.ensure(force=True)
            return []
        if not answer:
            return []
        entries, gone = _entries(answer[0][1])
        if gone:
            self.ack(gone)
        return entries

    def own_pending(self, count: int) -> list[Entry]:
        """What this consumer name took before and never acknowledged (a restart)."""
        return self._read("0", count, None)

    def new(self, count: int, block_ms: int) -> list[Entry]:
        return self._read(">", count, block_ms)

    def claim_stale(self, min_idle: float, count: int) -> list[Entry]:
        """Take over entries another consumer took and left alone for `min_idle` seconds."""
        try:
            answer = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                            int(min_idle * 1000), self._claim_cursor,
                                            count=count)
        except redis.exceptions.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.groups.ensure(force=True)
            return []
        self._claim_cursor = _text(answer[0])
        entries, gone = _entries(answer[1])
        gone += [_text(i) for i in (answer[2] if len(answer) > 2 else [])]
        if gone:
            self.ack(gone)
        return entries

    def touch(self, ids: list[str]) -> None:
        """Reset the entries' idle time, so no other dispatcher takes them over
        while this one is still retrying them."""
        if ids:
            self.client.xclaim(self.stream, self.group, self.consumer, 0, ids, justid=True)

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def dead_letter(self, entries: list[Entry], error: str, attempts: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        for e in entries:
            pipe.xadd(self.dead, {FIELD_EVENT: e.event, "queued_id": e.id, "error": error,
                                  "attempts": attempts, "dead_at": f"{time.time():.3f}"},
                      maxlen=DEAD_LETTER_MAX, approximate=True)
        pipe.xack(self.stream, self.group, *[e.id for e in entries])
        pipe.execute()

    # -- operations (`dockyard events`) --------------------------------------

    def state(self) -> dict[str, Any]:
        """Pending (taken, not yet delivered), lag (not yet taken), dead letters."""
        out: dict[str, Any] = {"endpoint": self.group, "pending": 0, "lag": 0,
                               "consumers": 0, "last_delivered_id": None}
        try:
            groups = self.client.xinfo_groups(self.stream)
        except redis.exceptions.ResponseError:
            groups = []
        for g in groups:
            if _text(g["name"]) == self.group:
                lag = g.get("lag")
                if lag is None:  # Redis cannot tell after some trims: count it
                    lag = len(self.client.xrange(
                        self.stream, f"({_text(g['last-delivered-id'])}", "+", count=100_000))
                out.update(pending=int(g["pending"]), lag=int(lag),
                           consumers=int(g["consumers"]),
                           last_delivered_id=_text(g["last-delivered-id"]))
        out["dead_letters"] = int(self.client.xlen(self.dead))
        return out

    def replay_dead_letters(self, limit: int | None = None) -> int:
        """Queue the dead letters again, for this endpoint only; returns how many."""
        moved = 0
        while limit is None or moved < limit:
            batch = self.client.xrange(self.dead, "-", "+", count=min(
                500, limit - moved if limit is not None else 500))
            if not batch:
                break
            pipe = self.client.pipeline(transaction=True)
            for entry_id, fields in batch:
                pipe.xadd(self.stream, {FIELD_EVENT: fields[FIELD_EVENT.encode()],
                                        FIELD_ONLY: self.group})
                pipe.xdel(self.dead, entry_id)
            pipe.execute()
            moved += len(batch)
        return moved


def trim(client: redis.Redis, prefix: str, groups: list[str]) -> int:
    """Drop the entries every configured endpoint is done with; returns how many.

    An endpoint still needs its oldest pending entry and everything after its
    last-delivered id. Both only move forward, so a bound read here stays safe
    while dispatchers keep working. A group no longer configured does not hold
    the stream back.
    """
    stream = stream_key(prefix)
    try:
        info = {_text(g["name"]): g for g in client.xinfo_groups(stream)}
    except redis.exceptions.ResponseError:
        return 0
    bounds = []
    for name in groups:
        g = info.get(name)
        if g is None:
            return 0  # its group is about to be made: keep everything until it is
        if int(g["pending"]):
            oldest = client.xpending_range(stream, name, "-", "+", 1)
            if oldest:
                bounds.append(_text(oldest[0]["message_id"]))
                continue
        ms, _, seq = _text(g["last-delivered-id"]).partition("-")
        bounds.append(f"{ms}-{int(seq or 0) + 1}")
    if not bounds:
        return 0
    lowest = min(bounds, key=lambda i: tuple(int(p) for p in i.split("-")))
    return int(client.xtrim(stream, minid=lowest, approximate=False))
