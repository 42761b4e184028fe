"""Age-based eviction of cached manifests, per upstream (``max_age`` in seconds).

A cached manifest's last pull is the last write of its repository link
(``_manifests/<algorithm>/<hex>``): `touch` sets it when a pull is served,
at most once a minute per manifest and process, so a busy tag costs no
extra write per pull. On a filesystem the link's mtime is set
(`backend.touch`); an object's time is its last write and cannot be set,
so on an object store the link is written again with its value, under the
manifest's lock, so that it never brings back a link an eviction deleted.
Every ``proxy.eviction_interval`` seconds the evictor lists the
repositories of each upstream with a ``max_age`` (`inventory`, through the
backend) and deletes, like a client's DELETE would, each manifest not
pulled for longer: the index forgets it and its tags first, then the link
goes. Its blobs are then unreferenced and the garbage collector reclaims
them; a later pull fetches the manifest from the upstream again.

Eviction never touches a repository that no upstream claims.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from services.storage import inventory
from services.storage.blobstore import BlobStore
from services.storage.paths import Keys
from services.storage.proxy.settings import Upstream, UpstreamMap
from shared.validation import Digest, is_valid_name

log = logging.getLogger("dockyard.storage.proxy")

_TOUCH_EVERY = 60.0


class Evictor:
    def __init__(self, upstreams: UpstreamMap, blobs: BlobStore, index: Any) -> None:
        self._map = upstreams
        self._blobs = blobs
        self._backend = blobs.backend
        self._index = index
        self._touched: dict[tuple[str, Digest], float] = {}
        self._lock = threading.Lock()

    def touch(self, name: str, digest: Digest) -> None:
        """Record a pull of a cached manifest (its link's last write)."""
        now = time.monotonic()
        key = (name, digest)
        with self._lock:
            if now - self._touched.get(key, -_TOUCH_EVERY) < _TOUCH_EVERY:
                return
            if len(self._touched) > 100_000:
                self._touched.clear()
            self._touched[key] = now
        link = Keys.manifest_link(name, digest)
        if self._backend.local_path(link) is not None:
            self._backend.touch(link)  # a file: its mtime is set in place
            return
        with self._blobs.manifest_lock(name, digest):
            media_type = self._blobs.manifest_media_type(name, digest)
            if media_type is not None:
                self._backend.set_record(link, media_type)

    def run_once(self, now: float | None = None) -> int:
        """Evict what is older than its upstream's max_age; the number evicted."""
        now = time.time() if now is None else now
        evicted = 0
        for upstream in self._map.upstreams:
            if upstream.max_age > 0:
                evicted += self._evict(upstream, int((now - upstream.max_age) * 1e9))
        return evicted

    def _evict(self, upstream: Upstream, cutoff_ns: int) -> int:
        layout = self._blobs.layout
        evicted = 0
        for name in inventory.repositories(layout, self._backend, under=upstream.prefix):
            if not is_valid_name(name) or self._map.match(name) is not upstream:
                continue
            for link in list(inventory.manifest_links(layout, name, self._backend)):
                if link.mtime_ns < cutoff_ns and self._evict_one(name, link.digest, cutoff_ns):
                    evicted += 1
        return evicted

    def _evict_one(self, name: str, digest: Digest, cutoff_ns: int) -> bool:
        with self._blobs.manifest_lock(name, digest):
            info = self._backend.stat(Keys.manifest_link(name, digest))
            if info is None or info.mtime_ns >= cutoff_ns:
                return False  # pulled meanwhile, or gone
            self._index.delete_manifest(name, str(digest))
            self._blobs.unlink_manifest(name, digest)
            self._index.repository_changed(name)
        log.info("evicted the cached manifest %s@%s (not pulled within max_age)", name, digest)
        return True

    def start(self, interval: float) -> threading.Thread:
        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    self.run_once()
                except Exception:
                    log.exception("pull-through cache eviction failed")

        thread = threading.Thread(target=loop, name="proxy-eviction", daemon=True)
        thread.start()
        return thread
