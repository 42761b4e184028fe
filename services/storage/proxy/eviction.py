"""Age-based eviction of cached manifests, per upstream (``max_age`` in seconds).

A cached manifest's last pull is the modification time of its repository
link (``_manifests/<algorithm>/<hex>``, a symlink): `touch` sets it when a
pull is served, at most once a minute per manifest and process, so a busy
tag costs no extra write per pull. Every ``proxy.eviction_interval`` seconds
the evictor walks the repositories of each upstream with a ``max_age`` and
deletes, like a client's DELETE would, each manifest not pulled for longer:
the index forgets it and its tags first, then the link goes. Its blobs are
then unreferenced and the garbage collector reclaims them; a later pull
fetches the manifest from the upstream again.

Eviction never touches a repository that no upstream claims.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from services.storage.blobstore import BlobStore
from services.storage.proxy.settings import Upstream, UpstreamMap
from shared.validation import Digest, is_valid_name

log = logging.getLogger("dockyard.storage.proxy")

_TOUCH_EVERY = 60.0


class Evictor:
    def __init__(self, upstreams: UpstreamMap, blobs: BlobStore, index: Any) -> None:
        self._map = upstreams
        self._blobs = blobs
        self._index = index
        self._touched: dict[tuple[str, Digest], float] = {}
        self._lock = threading.Lock()

    def touch(self, name: str, digest: Digest) -> None:
        """Record a pull of a cached manifest (its link's mtime)."""
        now = time.monotonic()
        key = (name, digest)
        with self._lock:
            if now - self._touched.get(key, -_TOUCH_EVERY) < _TOUCH_EVERY:
                return
            if len(self._touched) > 100_000:
                self._touched.clear()
            self._touched[key] = now
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._blobs.layout.manifest_link(name, digest), follow_symlinks=False)

    def run_once(self, now: float | None = None) -> int:
        """Evict what is older than its upstream's max_age; the number evicted."""
        now = time.time() if now is None else now
        evicted = 0
        for upstream in self._map.upstreams:
            if upstream.max_age > 0:
                evicted += self._evict(upstream, now - upstream.max_age)
        return evicted

    def _evict(self, upstream: Upstream, cutoff: float) -> int:
        repositories = self._blobs.layout.repositories
        top = repositories / upstream.prefix if upstream.prefix else repositories
        evicted = 0
        for directory, subdirs, _ in os.walk(top):
            if "_manifests" not in subdirs:
                subdirs[:] = [d for d in subdirs if not d.startswith("_")]
                continue
            name = Path(directory).relative_to(repositories).as_posix()
            subdirs[:] = [d for d in subdirs if not d.startswith("_")]
            if not is_valid_name(name) or self._map.match(name) is not upstream:
                continue
            for algorithm_dir in (Path(directory) / "_manifests").iterdir():
                for link in algorithm_dir.iterdir():
                    try:
                        if link.lstat().st_mtime >= cutoff:
                            continue
                    except FileNotFoundError:
                        continue
                    if self._evict_one(name, Digest(algorithm_dir.name, link.name), cutoff):
                        evicted += 1
        return evicted

    def _evict_one(self, name: str, digest: Digest, cutoff: float) -> bool:
        link = self._blobs.layout.manifest_link(name, digest)
        with self._blobs.manifest_lock(name, digest):
            try:
                if link.lstat().st_mtime >= cutoff:
                    return False  # pulled meanwhile
            except FileNotFoundError:
                return False
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
