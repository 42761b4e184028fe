"""Storage's view of the index: manifest records and tag resolution, with a tag cache.

The cache (a `shared.event_cache.EventCache`) serves two purposes.

- **Fewer hops.** While this process is subscribed to the index's events in
  Redis (`shared.events`), a tag it resolved within `fresh_ttl` seconds is
  served without asking the index: every change to a repository, from any
  storage process, publishes the repository's scope and drops its entries
  here. Without a live subscription (not configured, or Redis unreachable)
  every pull by tag asks the index, since a missed event would otherwise
  mean a stale tag.
- **The index's bad moments.** While the index (or its Redis) is unreachable,
  a tag resolved within `stale_if_error` seconds is still served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared import errors
from shared.batching import Batcher
from shared.event_cache import EventCache
from shared.events import repo_scope
from shared.rpc import RpcClient, RpcError, RpcUnavailable

log = logging.getLogger("dockyard.storage.index_client")


@dataclass(frozen=True, slots=True)
class Resolved:
    digest: str
    # True when the index itself answered during this call: only such an
    # answer may be cached by the router (see `shared.events`).
    from_index: bool = True


class IndexClient:
    def __init__(self, rpc: RpcClient, *, fresh_ttl: float, stale_if_error: float,
                 retry_after: int = 2, max_entries: int = 100_000) -> None:
        self._rpc = rpc
        self._stale_if_error = stale_if_error
        self._retry_after = retry_after
        # Sizes count entries: each is one small tag -> digest answer.
        self.cache: EventCache[Resolved] = EventCache(ttl=fresh_ttl, max_bytes=max_entries,
                                                      max_entry=1)
        self._puts: Batcher[dict[str, Any]] = Batcher(
            lambda records: self._rpc.call("put_manifests", {"records": records}))
        self._events: Batcher[str] = Batcher(
            lambda events: self._rpc.call("record_events", {"events": events}))

    def _unavailable(self, e: Exception) -> errors.Unavailable:
        err = errors.Unavailable("the index service is unavailable",
                                 retry_after=self._retry_after)
        err.maybe_applied = getattr(e, "maybe_applied", True)
        return err

    def _call(self, method: str, args: dict[str, Any]) -> Any:
        try:
            return self._rpc.call(method, args)
        except (RpcUnavailable, RpcError) as e:
            raise self._unavailable(e) from None

    def resolve_tag(self, repo: str, tag: str, *, ask_index: bool = False) -> Resolved:
        """The tag's digest, from the cache unless `ask_index` (or it is not there)."""
        scope = repo_scope(repo)
        hit = None if ask_index else self.cache.fresh((repo, tag))
        if hit is not None:
            return Resolved(hit.digest, from_index=False)
        stamp = self.cache.stamp(scope)
        try:
            answer = self._rpc.call("resolve_tag", {"repo": repo, "tag": tag})
        except (RpcUnavailable, RpcError):
            stale = self.cache.stale((repo, tag), self._stale_if_error)
            if stale is not None:
                return Resolved(stale.digest, from_index=False)
            raise errors.Unavailable("the index service is unavailable",
                                     retry_after=self._retry_after) from None
        error = answer.get("error")
        if error:
            if error == "NAME_UNKNOWN":
                raise errors.NameUnknown(detail={"name": repo})
            raise errors.ManifestUnknown(detail={"tag": tag})
        resolved = Resolved(answer["digest"])
        self.cache.put(stamp, scope, (repo, tag), resolved, 1)
        return resolved

    def repository_changed(self, repo: str) -> None:
        """Have the index publish the repository's event again, after a change on
        disk: caches that kept an answer read between the index's change and
        the disk's drop it now. Best effort: the cache TTL bounds a lost one."""
        try:
            self._rpc.call("repository_changed", {"repo": repo})
        except (RpcUnavailable, RpcError) as e:
            log.warning("could not announce a change of %s: %s", repo, e)

    # Each write drops the repository's cached tags at once: the event that
    # the index publishes does the same in every other process, a moment later.

    def put_manifest(self, record: dict[str, Any]) -> None:
        """Record a pushed manifest; concurrent pushes share one call (group commit)."""
        try:
            self._puts.submit(record)
        except (RpcUnavailable, RpcError) as e:
            raise self._unavailable(e) from None
        finally:
            self.cache.invalidate(repo_scope(record["repo"]))

    def record_event(self, event: str) -> None:
        """Queue one user event (`services.storage.notifier`); concurrent ones share a call."""
        try:
            self._events.submit(event)
        except (RpcUnavailable, RpcError) as e:
            raise self._unavailable(e) from None

    def delete_tag(self, repo: str, tag: str, event: str | None = None) -> bool:
        args = {"repo": repo, "tag": tag, **({"event": event} if event else {})}
        try:
            answer = self._call("delete_tag", args)
        finally:
            self.cache.invalidate(repo_scope(repo))
        return bool(answer.get("deleted"))

    def delete_manifest(self, repo: str, digest: str,
                        events: tuple[str, str] | None = None) -> None:
        """`events`: the manifest delete event and the template of its tag deletes."""
        args: dict[str, Any] = {"repo": repo, "digest": digest}
        if events:
            args["event"], args["tag_event"] = events
        try:
            self._call("delete_manifest", args)
        finally:
            self.cache.invalidate(repo_scope(repo))
