"""The storage resources of a mirrored repository, in front of the ordinary ones.

Each wraps the ordinary resource of its route: a repository no upstream
claims goes straight through; a mirrored one is pulled through
`cache.PullThrough` first and then served by the ordinary resource from what
is stored, so the bytes a client gets are always the ones on disk (or, on a
blob's first pull, the ones being verified into it). Writes to a mirrored
repository are refused with 405 UNSUPPORTED.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import falcon

from services.storage.notifier import Notifier
from services.storage.proxy.cache import PullThrough
from services.storage.proxy.fetch import FetchFailed
from shared import errors
from shared.events import CACHEABLE_HEADER
from shared.validation import check_name, parse_digest

CACHE_STATUS = "Cache-Status"


class _Wrapper:
    def __init__(self, inner: Any, proxy: PullThrough) -> None:
        self._inner = inner
        self._proxy = proxy

    def _refuse_writes(self, name: str) -> None:
        check_name(name)
        upstream = self._proxy.match(name)
        if upstream is not None:
            raise self._proxy.refuse_push(name, upstream)


class ProxyManifestResource(_Wrapper):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               reference: str) -> None:
        upstream = self._proxy.match(name)
        if upstream is None:
            return self._inner.on_get(req, resp, name, reference)
        check_name(name)
        digest, status = self._proxy.manifest(name, reference, upstream)
        self._inner.on_get(req, resp, name, str(digest))
        # Freshness is the TTL's business here, not the index events'.
        resp.delete_header(CACHEABLE_HEADER)
        resp.set_header(CACHE_STATUS, status)
        return None

    on_head = on_get

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str,
               reference: str) -> None:
        self._refuse_writes(name)
        self._inner.on_put(req, resp, name, reference)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  reference: str) -> None:
        self._refuse_writes(name)
        self._inner.on_delete(req, resp, name, reference)


class ProxyBlobResource(_Wrapper):
    def __init__(self, inner: Any, proxy: PullThrough, notifier: Notifier) -> None:
        super().__init__(inner, proxy)
        self._notifier = notifier

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               digest: str) -> None:
        upstream = self._proxy.match(name)
        if upstream is None:
            return self._inner.on_get(req, resp, name, digest)
        check_name(name)
        d = parse_digest(digest)
        head = req.method == "HEAD"
        fetched = self._proxy.blob(name, d, upstream, head)
        if fetched is None:
            self._inner.on_get(req, resp, name, digest)
            resp.set_header(CACHE_STATUS, "dockyard; hit")
            return None
        size, body = fetched
        if body is not None:
            body = _started(body)
        resp.content_type = "application/octet-stream"
        resp.set_header("Docker-Content-Digest", str(d))
        resp.set_header(CACHE_STATUS, "dockyard; fwd=uri-miss" + ("" if head else "; stored"))
        # A Range on a first pull gets the whole blob: a 200 is a valid answer to it.
        resp.content_length = size
        if body is not None:
            # A first pull is a pull as a cached one is (the ordinary resource
            # reports those).
            self._notifier.blob_pulled(req, name, str(d), size)
            # Raises FetchFailed mid-body when the bytes fail verification:
            # waitress then closes the connection short of Content-Length.
            resp.stream = body
        return None

    on_head = on_get

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  digest: str) -> None:
        self._refuse_writes(name)
        self._inner.on_delete(req, resp, name, digest)


class ProxyUploadStartResource(_Wrapper):
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._refuse_writes(name)
        self._inner.on_post(req, resp, name)


class _Started:
    """A body whose first chunk was already read; closing it closes the rest."""

    def __init__(self, first: bytes | None, rest: Iterator[bytes]) -> None:
        self._first = first
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            yield self._first
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()


def _started(body: Iterator[bytes]) -> _Started:
    """Wait for the first bytes (or the verdict on a blob too small to have any
    before it). Failing before anything was sent is a proper 503, since the
    status line is still ours to choose; after that, only an abort is left."""
    try:
        first = next(body, None)
    except FetchFailed as e:
        raise errors.Unavailable(f"the upstream's bytes were not usable: {e}") from None
    return _Started(first, body)
