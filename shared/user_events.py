"""User-facing registry events: typed records in distribution's notification format.

These are not the cache-invalidation scopes of `shared.events`: those say
"something under this scope changed" and may be coalesced or missed (caches
then turn themselves off). A user event says what happened, to what, by whom,
and is never dropped once recorded:

- The writer builds the whole event (`Event.to_json`) where the request is:
  in storage, which sees the request's headers and the actor.
- Manifest push, manifest delete and tag delete are recorded by the index in
  the same Lua script as the index change (`services.index.store`), so a
  change is acknowledged if and only if its event is queued.
- Pulls and blob events are recorded by the index's ``record_events`` call
  before storage answers the request.
- Everything goes to one Redis Stream, `stream_key`; each endpoint is a
  consumer group of that stream named after the endpoint, and its dead
  letters go to `dead_letter_key`. `services.notifications` delivers them.

The JSON is distribution's (``notifications/event.go`` of distribution 2.x):
field names, their order and which ones are left out when empty. Its ``id``
is a UUID made once, when the event is built, and kept through retries,
redeliveries and replays: receivers deduplicate by it.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# distribution 2.x reports a blob's media type as the storage layer knows it.
BLOB_MEDIA_TYPE = "application/octet-stream"

PUSH, PULL, MOUNT, DELETE = "push", "pull", "mount", "delete"
ACTIONS = (PUSH, PULL, MOUNT, DELETE)

# Stream entry fields: the event's JSON, and for a replayed dead letter the one
# endpoint it is meant for (every other endpoint skips it).
FIELD_EVENT = "event"
FIELD_ONLY = "only"


def stream_key(prefix: str) -> str:
    return f"{prefix}notifications:events"


def dead_letter_key(prefix: str, endpoint: str) -> str:
    return f"{prefix}notifications:dead:{endpoint}"


@dataclass(frozen=True)
class RequestRecord:
    """The request that caused the event, as distribution's ``RequestRecord``."""

    id: str
    method: str
    useragent: str = ""
    addr: str = ""
    host: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"id": self.id}
        if self.addr:
            out["addr"] = self.addr
        if self.host:
            out["host"] = self.host
        out["method"] = self.method
        out["useragent"] = self.useragent
        return out


@dataclass(frozen=True)
class Target:
    repository: str
    digest: str = ""
    media_type: str = ""
    size: int = 0
    url: str = ""
    tag: str = ""
    from_repository: str = ""

    def to_dict(self) -> dict[str, Any]:
        # Go's encoding/json in the order of distribution's struct, omitempty.
        pairs: list[tuple[str, Any]] = [
            ("mediaType", self.media_type), ("size", self.size), ("digest", self.digest),
            ("length", self.size), ("repository", self.repository),
            ("fromRepository", self.from_repository), ("url", self.url), ("tag", self.tag),
        ]
        return {k: v for k, v in pairs if v}


@dataclass(frozen=True)
class Source:
    """The dockyard process that generated the event; `instance_id` changes per start."""

    addr: str
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def here(cls, port: int | str) -> Source:
        return cls(f"{socket.gethostname()}:{port}")

    def to_dict(self) -> dict[str, str]:
        return {"addr": self.addr, "instanceID": self.instance_id}


@dataclass(frozen=True)
class Event:
    action: str
    target: Target
    request: RequestRecord
    source: Source
    actor: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": rfc3339(self.timestamp),
            "action": self.action,
            "target": self.target.to_dict(),
            "request": self.request.to_dict(),
            "actor": {"name": self.actor} if self.actor else {},
            "source": self.source.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def rfc3339(t: datetime) -> str:
    """Go's RFC3339Nano for a UTC time: trailing zeros of the fraction dropped."""
    text = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def envelope(events_json: list[str]) -> bytes:
    """One POST body holding several events, from their recorded JSON texts."""
    return ('{"events":[' + ",".join(events_json) + "]}").encode()


class UserEventGroups:
    """Makes each endpoint's consumer group on the stream, once per process.

    A group made at ``$`` sees every event added after it. The index makes the
    groups before it adds its first event, and the dispatcher before it reads,
    so an endpoint receives every event recorded since a dockyard process
    first ran with it configured; a group that exists is left as it is.
    """

    def __init__(self, client: redis.Redis, stream: str, groups: tuple[str, ...]) -> None:
        self._client = client
        self._stream = stream
        self._groups = groups
        self._done = not groups
        self._lock = threading.Lock()

    def ensure(self, force: bool = False) -> None:
        if self._done and not force:
            return
        with self._lock:
            for group in self._groups:
                try:
                    self._client.xgroup_create(self._stream, group, id="$", mkstream=True)
                except redis.exceptions.ResponseError as e:
                    if "BUSYGROUP" not in str(e):
                        raise
            self._done = True
