"""The pull-through cache: what storage does for a repository that mirrors an upstream.

`PullThrough` is the one interface the storage resources use:

- `match(name)`: the upstream a repository mirrors, or None for an ordinary one;
- `manifest(name, reference)`: makes sure the manifest is stored, linked and
  recorded in the index, and returns its digest and a ``Cache-Status``
  (RFC 9211) value for the response;
- `blob(name, digest, head)`: None when the blob is stored and linked (the
  ordinary resource serves it), else the length and, for a GET, the body
  streamed from the upstream by `fetch.BlobFetcher`.

Rules:

- A manifest by tag is checked with a HEAD upstream at most once per
  `tag_ttl` per storage process. When the upstream is unreachable, times
  out, answers 429 or 5xx, or refuses the credentials (401/403), the stored
  copy is served with
  ``Cache-Status: dockyard; hit; detail=upstream-unavailable`` and a warning
  in the log; without a stored copy the answer is 503 with Retry-After.
- A manifest by digest, and a blob, is served from the cache once stored; a
  manifest is stored only when its bytes hash to the digest asked for or
  announced, a blob only when `BlobFetcher` verified it.
- Cached content is recorded like pushed content: manifests linked in the
  repository and recorded in the index with their tag and references, so the
  garbage collector keeps what a cached tag references.
- A blob stored for another repository is linked into a mirrored one only
  once the upstream confirms (HEAD) that the repository has it: a digest is
  not a capability to read another repository's layers.
- Answers are never marked cacheable for the router's response cache: a tag's
  freshness is decided here, by the TTL, not by index events.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from services.storage import manifest_format as mf
from services.storage.blobstore import BlobStore
from services.storage.proxy.eviction import Evictor
from services.storage.proxy.fetch import BlobFetcher
from services.storage.proxy.settings import Upstream, UpstreamMap
from services.storage.proxy.upstream import UpstreamClient, UpstreamDown
from shared import errors
from shared.validation import Digest, is_digest_reference, is_valid_tag, parse_digest

log = logging.getLogger("dockyard.storage.proxy")

HIT = "dockyard; hit"
REVALIDATED = "dockyard; fwd=stale; fwd-status=304"
MISS = "dockyard; fwd=uri-miss; stored"
STALE = "dockyard; hit; detail=upstream-unavailable"
_MAX_CHECKED = 100_000

# (name, digest, tag, manifest, size, labels) -> None: links and records a
# manifest as a push does (ManifestResource.record).
Recorder = Callable[[str, Digest, "str | None", mf.Manifest, int, dict[str, str]], None]
# Search shows a cached image's description as where it was cached from,
# unless the manifest carries a description of its own.
DESCRIPTION = "org.opencontainers.image.description"


class PullThrough:
    def __init__(self, upstreams: UpstreamMap, blobs: BlobStore, record: Recorder,
                 resolve_tag: Callable[[str, str], str], *, timeout: float,
                 retry_after: int, metrics: Any = None, evictor: Evictor | None = None) -> None:
        self._map = upstreams
        self._blobs = blobs
        self._record = record
        self._resolve_tag = resolve_tag
        self._retry_after = retry_after
        self.clients = {u.prefix: UpstreamClient(u, timeout) for u in upstreams.upstreams}
        self.fetcher = BlobFetcher(blobs, timeout)
        # (name, tag) -> monotonic time the upstream last confirmed the tag.
        self._checked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._metrics = ProxyMetrics(metrics)
        self.evictor = evictor

    def match(self, name: str) -> Upstream | None:
        return self._map.match(name)

    def refuse_push(self, name: str, upstream: Upstream) -> errors.RegistryError:
        return errors.Unsupported(
            f"{name} is a pull-through cache of {upstream.url}: pushes and deletes are "
            "refused; push to a repository outside the mirrored prefixes")

    # -- manifests ---------------------------------------------------------

    def manifest(self, name: str, reference: str, upstream: Upstream) -> tuple[Digest, str]:
        digest, status = self._manifest(name, reference, upstream)
        if self.evictor is not None:
            self.evictor.touch(name, digest)
        return digest, status

    def _manifest(self, name: str, reference: str, upstream: Upstream) -> tuple[Digest, str]:
        client = self.clients[upstream.prefix]
        remote = upstream.remote_name(name)
        if is_digest_reference(reference):
            try:
                digest = parse_digest(reference)
            except errors.DigestInvalid:
                raise errors.ManifestUnknown(detail={"reference": reference[:300]}) from None
            if self._blobs.manifest_media_type(name, digest) is not None:
                self._metrics.result(upstream, "manifest", "hit")
                return digest, HIT
            try:
                self._fetch_manifest(client, name, remote, digest, None)
            except UpstreamDown as e:
                raise self._down(upstream, e, f"{name}@{digest}") from None
            return digest, MISS
        if not is_valid_tag(reference):
            raise errors.ManifestUnknown(detail={"reference": reference[:300]})
        return self._tag(client, upstream, name, remote, reference)

    def _tag(self, client: UpstreamClient, upstream: Upstream, name: str, remote: str,
             tag: str) -> tuple[Digest, str]:
        local = self._local(name, tag)
        key = (name, tag)
        checked = self._checked.get(key)
        now = time.monotonic()
        if local is not None and checked is not None and now - checked < upstream.tag_ttl:
            self._metrics.result(upstream, "manifest", "hit")
            return local, HIT
        try:
            started = time.monotonic()
            head = client.head_manifest(remote, tag)
            self._metrics.latency(upstream, "HEAD", time.monotonic() - started)
            announced = head.headers.get("Docker-Content-Digest")
            if head.status in (401, 403) and local is not None:
                # Refused credentials (expired, revoked) must not take cached
                # images away: served as when the upstream is down.
                raise UpstreamDown(f"{upstream.url} refused the credentials ({head.status})")
            if head.status in (401, 403, 404):
                raise errors.ManifestUnknown(detail={"tag": tag, "upstream": upstream.url})
            if head.status == 200 and announced and is_digest_reference(announced):
                remote_digest = parse_digest(announced)
                if remote_digest == local:
                    self._mark(key, now)
                    self._metrics.result(upstream, "manifest", "hit")
                    return local, REVALIDATED
                if self._blobs.manifest_media_type(name, remote_digest) is None:
                    self._fetch_manifest(client, name, remote, remote_digest, tag)
                else:
                    self._record_tag(name, remote_digest, tag, upstream, remote)
            else:
                # No digest announced: fetch by tag, and hash what came.
                remote_digest = self._fetch_manifest(client, name, remote, None, tag)
        except UpstreamDown as e:
            if local is None:
                raise self._down(upstream, e, f"{name}:{tag}") from None
            log.warning("upstream %s unavailable (%s): serving the cached %s:%s (%s)",
                        upstream.label, e, name, tag, local)
            self._metrics.result(upstream, "manifest", "stale")
            return local, STALE
        self._mark(key, now)
        self._metrics.result(upstream, "manifest", "miss")
        return remote_digest, MISS

    def _local(self, name: str, tag: str) -> Digest | None:
        try:
            return parse_digest(self._resolve_tag(name, tag))
        except (errors.ManifestUnknown, errors.NameUnknown):
            return None

    def _mark(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            if len(self._checked) >= _MAX_CHECKED:
                self._checked.clear()
            self._checked[key] = now

    def _fetch_manifest(self, client: UpstreamClient, name: str, remote: str,
                        expected: Digest | None, tag: str | None) -> Digest:
        """GET a manifest upstream, verify it, store it; its digest."""
        started = time.monotonic()
        resp = client.get_manifest(remote, str(expected) if expected else str(tag))
        self._metrics.latency(client.upstream, "GET", time.monotonic() - started)
        if resp.status != 200:
            raise errors.ManifestUnknown(detail={"reference": str(expected or tag),
                                                 "upstream": client.upstream.url})
        body = resp.data
        announced = resp.headers.get("Docker-Content-Digest")
        algorithm = expected.algorithm if expected else "sha256"
        digest = Digest(algorithm, hashlib.new(algorithm, body).hexdigest())
        if (expected is not None and digest != expected) or (
                announced and expected is None and announced != str(digest)):
            self._metrics.error(client.upstream, "digest")
            log.error("upstream %s sent a manifest for %s that fails verification "
                      "(expected %s, computed %s): discarded", client.upstream.label,
                      name, expected or announced, digest)
            raise errors.Unavailable(
                f"upstream {client.upstream.label} sent a manifest that fails verification",
                retry_after=self._retry_after)
        try:
            manifest = mf.parse(body, resp.headers.get("Content-Type"))
        except errors.RegistryError:
            raise errors.Unavailable(
                f"upstream {client.upstream.label} sent an unreadable manifest",
                retry_after=self._retry_after) from None
        self._blobs.ingest_bytes(body, digest)
        self._record(name, digest, tag, manifest, len(body), _labels(client.upstream, remote))
        return digest

    def _record_tag(self, name: str, digest: Digest, tag: str, upstream: Upstream,
                    remote: str) -> None:
        body = self._blobs.read(digest)
        media_type = self._blobs.manifest_media_type(name, digest)
        self._record(name, digest, tag, mf.parse(body, media_type), len(body),
                     _labels(upstream, remote))

    def _down(self, upstream: Upstream, e: Exception, what: str) -> errors.RegistryError:
        self._metrics.error(upstream, "unavailable")
        log.warning("upstream %s unavailable for uncached %s: %s", upstream.label, what, e)
        return errors.Unavailable(
            f"upstream {upstream.label} ({upstream.url}) is unavailable and {what} is not "
            "cached", retry_after=self._retry_after)

    # -- blobs ---------------------------------------------------------------

    def blob(self, name: str, digest: Digest, upstream: Upstream,
             head: bool) -> tuple[int, Iterator[bytes] | None] | None:
        client = self.clients[upstream.prefix]
        remote = upstream.remote_name(name)
        if self._blobs.has_layer(name, digest):
            size = 0 if head else self._blobs.size(digest) or 0
            self._metrics.result(upstream, "blob", "hit", size)
            return None
        try:
            if head or self._blobs.size(digest) is not None:
                resp = client.head_blob(remote, str(digest))
                if resp.status != 200:
                    raise errors.BlobUnknown(detail={"digest": str(digest)})
                if self._blobs.size(digest) is not None:
                    self._blobs.link_layer(name, digest)
                    return None
                length = resp.headers.get("Content-Length", "")
                return (int(length) if length.isdigit() else 0), None
        except UpstreamDown as e:
            raise self._down(upstream, e, f"{name}@{digest}") from None
        started = time.monotonic()
        opened = self.fetcher.open(client, remote, digest, self._retry_after)
        self._metrics.latency(upstream, "GET", time.monotonic() - started)
        if opened is None:
            # Stored meanwhile, perhaps for another repository: confirmed with a HEAD.
            return self.blob(name, digest, upstream, head)
        # The upstream answered 200 for this repository: the link is deserved
        # (has_layer also needs the verified blob, so it serves nothing before).
        self._blobs.link_layer(name, digest)
        self._metrics.result(upstream, "blob", "miss")
        return opened


def _labels(upstream: Upstream, remote: str) -> dict[str, str]:
    host = upstream.url.split("://", 1)[1]
    return {DESCRIPTION: f"cached from {host}/{remote}"}


class ProxyMetrics:
    """dockyard_proxy_* counters in the storage process's registry (None: off)."""

    def __init__(self, metrics: Any) -> None:
        self._on = metrics is not None
        if not self._on:
            return
        from prometheus_client import Histogram

        self.requests = metrics.counter("dockyard_proxy_requests_total",
                                        "Pull-through requests by upstream, kind and result "
                                        "(hit, miss, stale)", ["upstream", "kind", "result"])
        self.errors = metrics.counter("dockyard_proxy_upstream_errors_total",
                                      "Upstream failures by kind (unavailable, digest)",
                                      ["upstream", "kind"])
        self.saved = metrics.counter("dockyard_proxy_bytes_saved_total",
                                     "Blob bytes served from the cache instead of the upstream",
                                     ["upstream"])
        self.seconds = Histogram("dockyard_proxy_upstream_seconds",
                                 "Time to the upstream's response headers",
                                 ["upstream", "method"], registry=metrics.registry)

    def result(self, upstream: Upstream, kind: str, result: str, size: int = 0) -> None:
        if self._on:
            self.requests.labels(upstream.label, kind, result).inc()
            if size:
                self.saved.labels(upstream.label).inc(size)

    def error(self, upstream: Upstream, kind: str) -> None:
        if self._on:
            self.errors.labels(upstream.label, kind).inc()

    def latency(self, upstream: Upstream, method: str, seconds: float) -> None:
        if self._on:
            self.seconds.labels(upstream.label, method).observe(seconds)
