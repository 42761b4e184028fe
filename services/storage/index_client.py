"""Storage's view of the index: manifest records and tag resolution, with a tag cache.

The cache serves two purposes.

- **Fewer hops.** While this process is subscribed to the index's tag events
  in Redis (see `services.storage.tag_events`), a tag it resolved within
  `fresh_ttl` seconds is served without asking the index: every change to a
  repository's tags, from any storage process, publishes the repository's
  name and drops its entries here. Without a live subscription (not
  configured, or Redis unreachable) every pull by tag asks the index, since
  a missed event would otherwise mean a stale tag.
- **The index's bad moments.** While the index (or its Redis) is unreachable,
  a tag resolved within `stale_if_error` seconds is still served.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from shared import errors
from shared.rpc import RpcClient, RpcError, RpcUnavailable


@dataclass(frozen=True, slots=True)
class Resolved:
    digest: str


@dataclass(frozen=True, slots=True)
class _Entry:
    at: float
    epoch: int
    resolved: Resolved


class IndexClient:
    def __init__(self, rpc: RpcClient, *, fresh_ttl: float, stale_if_error: float,
                 retry_after: int = 2, max_entries: int = 100_000) -> None:
        self._rpc = rpc
        self._fresh_ttl = fresh_ttl
        self._stale_if_error = stale_if_error
        self._retry_after = retry_after
        self._max_entries = max_entries
        self._cache: dict[str, dict[str, _Entry]] = {}
        self._size = 0
        # Bumped on every change of the event subscription: entries from an
        # older epoch may have missed an event, so they are never fresh.
        self._epoch = 0
        self._events_live = False
        # Bumped per repository on every event, so an answer that raced an
        # event is not cached.
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- tag events ----------------------------------------------------------

    def events_state(self, live: bool) -> None:
        with self._lock:
            self._epoch += 1
            self._events_live = live

    def tags_changed(self, repo: str) -> None:
        with self._lock:
            self._generation[repo] = self._generation.get(repo, 0) + 1
            dropped = self._cache.pop(repo, None)
            if dropped:
                self._size -= len(dropped)

    # -- calls ---------------------------------------------------------------

    def _call(self, method: str, args: dict[str, Any]) -> Any:
        try:
            return self._rpc.call(method, args)
        except (RpcUnavailable, RpcError) as e:
            err = errors.Unavailable("the index service is unavailable",
                                     retry_after=self._retry_after)
            err.maybe_applied = getattr(e, "maybe_applied", True)
            raise err from None

    def resolve_tag(self, repo: str, tag: str) -> Resolved:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(repo, {}).get(tag)
            fresh = (entry is not None and self._events_live and entry.epoch == self._epoch
                     and now - entry.at < self._fresh_ttl)
            stamp = (self._epoch, self._generation.get(repo, 0))
        if fresh:
            assert entry is not None
            return entry.resolved
        try:
            answer = self._rpc.call("resolve_tag", {"repo": repo, "tag": tag})
        except (RpcUnavailable, RpcError):
            if entry is not None and now - entry.at < self._stale_if_error:
                return entry.resolved
            raise errors.Unavailable("the index service is unavailable",
                                     retry_after=self._retry_after) from None
        error = answer.get("error")
        if error:
            self._forget(repo, tag)
            if error == "NAME_UNKNOWN":
                raise errors.NameUnknown(detail={"name": repo})
            raise errors.ManifestUnknown(detail={"tag": tag})
        resolved = Resolved(answer["digest"])
        with self._lock:
            if stamp == (self._epoch, self._generation.get(repo, 0)):
                if self._size >= self._max_entries:
                    self._cache.clear()
                    self._size = 0
                tags = self._cache.setdefault(repo, {})
                self._size += tag not in tags
                tags[tag] = _Entry(now, stamp[0], resolved)
        return resolved

    def _forget(self, repo: str, tag: str | None = None, digest: str | None = None) -> None:
        with self._lock:
            tags = self._cache.get(repo)
            if not tags:
                return
            for t in [t for t, e in tags.items()
                      if t == tag or (digest is not None and e.resolved.digest == digest)]:
                del tags[t]
                self._size -= 1

    def put_manifest(self, record: dict[str, Any]) -> None:
        self._call("put_manifest", record)
        if record.get("tag"):
            self._forget(record["repo"], tag=record["tag"])

    def delete_tag(self, repo: str, tag: str) -> bool:
        answer = self._call("delete_tag", {"repo": repo, "tag": tag})
        self._forget(repo, tag=tag)
        return bool(answer.get("deleted"))

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._call("delete_manifest", {"repo": repo, "digest": digest})
        self._forget(repo, digest=digest)
