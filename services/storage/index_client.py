"""Storage's view of the index: manifest records and tag resolution, with a tag cache.

The cache exists for the index's bad moments: while the index (or its Redis)
is unreachable, a tag this process resolved within `stale_if_error` seconds
is still served from here. With `fresh_ttl` > 0 a cached tag is also served
without asking the index at all, trading that many seconds of staleness
across storage processes for one network hop less per pull.
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


class IndexClient:
    def __init__(self, rpc: RpcClient, *, fresh_ttl: float, stale_if_error: float,
                 retry_after: int = 2, max_entries: int = 100_000) -> None:
        self._rpc = rpc
        self._fresh_ttl = fresh_ttl
        self._stale_if_error = stale_if_error
        self._retry_after = retry_after
        self._max_entries = max_entries
        self._cache: dict[tuple[str, str], tuple[float, Resolved]] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, args: dict[str, Any]) -> Any:
        try:
            return self._rpc.call(method, args)
        except (RpcUnavailable, RpcError) as e:
            err = errors.Unavailable("the index service is unavailable",
                                     retry_after=self._retry_after)
            err.maybe_applied = getattr(e, "maybe_applied", True)
            raise err from None

    def resolve_tag(self, repo: str, tag: str) -> Resolved:
        key = (repo, tag)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._fresh_ttl:
            return cached[1]
        try:
            answer = self._rpc.call("resolve_tag", {"repo": repo, "tag": tag})
        except (RpcUnavailable, RpcError):
            if cached is not None and now - cached[0] < self._stale_if_error:
                return cached[1]
            raise errors.Unavailable("the index service is unavailable",
                                     retry_after=self._retry_after) from None
        error = answer.get("error")
        if error == "NAME_UNKNOWN":
            self._forget(key)
            raise errors.NameUnknown(detail={"name": repo})
        if error:
            self._forget(key)
            raise errors.ManifestUnknown(detail={"tag": tag})
        resolved = Resolved(answer["digest"])
        with self._lock:
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[key] = (now, resolved)
        return resolved

    def _forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def forget_repo_digest(self, repo: str, digest: str) -> None:
        with self._lock:
            for key in [k for k, (_, r) in self._cache.items()
                        if k[0] == repo and r.digest == digest]:
                del self._cache[key]

    def put_manifest(self, record: dict[str, Any]) -> None:
        self._call("put_manifest", record)
        if record.get("tag"):
            self._forget((record["repo"], record["tag"]))

    def delete_tag(self, repo: str, tag: str) -> bool:
        answer = self._call("delete_tag", {"repo": repo, "tag": tag})
        self._forget((repo, tag))
        return bool(answer.get("deleted"))

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._call("delete_manifest", {"repo": repo, "digest": digest})
        self.forget_repo_digest(repo, digest)
