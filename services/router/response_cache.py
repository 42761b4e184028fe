"""The router's cache of small answers derived from index state: one hop instead of two.

A pull by tag, a tags list, a referrers list, a catalog page or a search
costs two or three Python processes when forwarded (see the README's
performance section); from this cache it costs the router alone.

Only answers a service marked with `shared.events.CACHEABLE_HEADER` are kept
(a 200 that is a function of index state as of now: not a tag served stale
while the index is down, not a search from a snapshot older than the
catalog). Each belongs to a scope: ``repo:<name>`` for a repository's
manifests, tags and referrers, ``catalog`` for catalog pages and searches.
`shared.event_cache.EventCache` drops it when the index publishes an event
for that scope and serves nothing while the events subscription is down.

Read-your-writes: every write through this router (a manifest PUT or
DELETE) drops its repository's scope and the catalog's here as soon as its
answer arrives, without waiting for the event. The other router processes
of the same `serve` learn of it before the answer leaves, through the write
fence (`services/router/write_fence.py`); another machine's routers learn
of it from the event, within milliseconds.

A miss asks the service with `shared.events.CACHE_WANTED_HEADER`, so that
the answer comes from the index itself rather than from storage's own tag
cache, which may not have seen the event this router just handled.

A HEAD that misses is asked of the service as a GET, so that the answer,
no larger than a manifest, fills the cache for the GET that usually follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.router.write_fence import WriteFence
from shared.event_cache import EventCache
from shared.events import CATALOG_SCOPE
from shared.observability import Metrics

# Per-request or per-response headers that must not be replayed.
_NOT_REPLAYED = frozenset({"date", "server", "x-request-id"})
# Conditional and partial requests are rare for these routes; they go through.
_BYPASS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_IF_MODIFIED_SINCE",
           "HTTP_IF_UNMODIFIED_SINCE", "HTTP_RANGE")
# What an answer may depend on besides its scope's state: the URL, content
# negotiation, and the host and scheme that Link and Location URLs are built from.
_KEY_FIELDS = ("PATH_INFO", "QUERY_STRING", "HTTP_ACCEPT", "HTTP_HOST",
               "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO", "wsgi.url_scheme")
_ENTRY_OVERHEAD = 512


@dataclass(frozen=True, slots=True)
class Answer:
    status: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


# forward(capture, as_get): forwards the request; `capture` receives a cacheable answer.
Capture = Callable[[Answer], None]
Fetch = Callable[[Capture | None, bool], Any]


def replayable(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in headers if k.lower() not in _NOT_REPLAYED)


# The write fence the router processes of this machine share, when `serve`
# runs several (`use_write_fence`); process-wide, like the cache it guards.
_fence: WriteFence | None = None


def use_write_fence(path: str) -> None:
    global _fence
    _fence = WriteFence(path)


class ResponseCache:
    def __init__(self, cache: EventCache[Answer], metrics: Metrics) -> None:
        self.cache = cache
        self._lookups = metrics.counter("dockyard_router_cache_lookups_total",
                                        "Response cache lookups", ["result"])

    def handle(self, environ: dict[str, Any], start_response: Callable[..., Any],
               scope: str, fetch: Fetch) -> Any:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            try:
                return fetch(None, False)
            finally:
                # A manifest PUT may add the repository to the catalog and change
                # its description, which search shows.
                self.cache.invalidate(scope)
                self.cache.invalidate(CATALOG_SCOPE)
                if _fence is not None:
                    _fence.announce((scope, CATALOG_SCOPE))
        if _fence is not None:
            _fence.catch_up(self.cache.invalidate, self.cache.forget_all)
        if not self.cache.live or any(h in environ for h in _BYPASS):
            self._lookups.labels("bypass").inc()
            return fetch(None, False)
        key = tuple(environ.get(f, "") for f in _KEY_FIELDS)
        hit = self.cache.fresh(key)
        if hit is not None:
            self._lookups.labels("hit").inc()
            # A copy: the access log appends this request's id to the list.
            start_response(hit.status, list(hit.headers))
            return [] if method == "HEAD" else [hit.body]
        self._lookups.labels("miss").inc()
        stamp = self.cache.stamp(scope)

        def capture(answer: Answer) -> None:
            self.cache.put(stamp, scope, key, answer, len(answer.body) + _ENTRY_OVERHEAD)

        return fetch(capture, method == "HEAD")
