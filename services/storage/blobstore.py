"""Content-addressed blobs and the per-repository links that expose them.

Manifests are blobs too: their bytes live under ``blobs/`` and a repository's
``_manifests`` link records the media type they were pushed with. Everything
goes through the storage backend (`backends.base`), so this module does not
know whether the bytes are in a directory or a bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from services.storage.backends.base import Backend, Staged
from services.storage.backends.filesystem import FilesystemBackend
from services.storage.bodies import Body
from services.storage.paths import Keys, Layout
from shared import errors
from shared.validation import Digest, parse_digest


class BlobStore:
    """Blobs and links. Every method that creates or relies on a blob or a link
    touches it under the blob's stripe (`fences`), so a concurrent collection
    either deleted it first (and the method sees it missing) or keeps it.

    `layout` is the local root: the filesystem backend's storage, or only the
    per-replica scratch (``tmp/``) when the backend is an object store."""

    def __init__(self, layout: Layout, backend: Backend | None = None) -> None:
        self.layout = layout
        self.backend: Backend = backend or FilesystemBackend(layout)
        self.fences = self.backend.fences

    # -- blobs -------------------------------------------------------------

    def size(self, digest: Digest) -> int | None:
        info = self.backend.stat(Keys.blob(digest))
        return None if info is None else info.size

    def open(self, digest: Digest, first: int = 0, length: int | None = None) -> BinaryIO:
        return self.backend.open(Keys.blob(digest), first, length)

    def read(self, digest: Digest) -> bytes:
        return self.backend.read(Keys.blob(digest))

    def redirect_url(self, digest: Digest) -> str | None:
        """Where a client may fetch the blob itself (a presigned URL), or None."""
        return self.backend.redirect_url(Keys.blob(digest))

    def local_path(self, digest: Digest) -> Path | None:
        """The blob's file, when this machine has it (the router's direct reads)."""
        return self.backend.local_path(Keys.blob(digest))

    def fetch_url(self, digest: Digest) -> str | None:
        """A URL of the object store the router may GET the blob from itself, or None."""
        return self.backend.fetch_url(Keys.blob(digest))

    def commit(self, staged: Staged, digest: Digest) -> None:
        """Make staged, verified bytes the blob `digest`; concurrent commits of one
        digest leave one whole copy whichever wins."""
        with self.fences.blob(digest):
            staged.commit(Keys.blob(digest))

    def ingest_body(self, body: Body, expected: Digest) -> None:
        """Store a whole request body under its digest, verified."""
        if body.path is None:
            assert body.stream is not None
            self.ingest(body.stream, body.length, expected)
            return
        try:
            hasher = hashlib.new(expected.algorithm)
            staged = self.backend.stage_file(body.path, hasher, Keys.blob(expected))
            self._verify_and_commit(staged, hasher, expected)
        finally:
            body.discard()

    def ingest(self, src: BinaryIO, length: int, expected: Digest | None,
               algorithm: str = "sha256") -> Digest:
        """Store a whole body: hashed as it arrives, verified, then made visible."""
        algorithm = expected.algorithm if expected else algorithm
        hasher = hashlib.new(algorithm)
        hint = Keys.blob(expected) if expected else ""
        staged = self.backend.stage(src, length, hasher, hint)
        digest = Digest(algorithm, hasher.hexdigest())
        self._verify_and_commit(staged, hasher, expected or digest)
        return digest

    def _verify_and_commit(self, staged: Staged, hasher: hashlib._Hash,
                           expected: Digest) -> None:
        try:
            computed = hasher.hexdigest()
            if computed != expected.hex:
                raise errors.DigestInvalid(detail={"expected": str(expected),
                                                   "computed": f"{expected.algorithm}:{computed}"})
            self.commit(staged, expected)
        except BaseException:
            staged.discard()
            raise

    def ingest_bytes(self, data: bytes, digest: Digest) -> None:
        with self.fences.blob(digest):
            if self.size(digest) == len(data) and self.backend.touch(Keys.blob(digest)):
                return
        # Written aside and committed once: the commit is what makes it visible.
        staged = self.backend.stage(io.BytesIO(data), len(data), None, Keys.blob(digest))
        try:
            self.commit(staged, digest)
        except BaseException:
            staged.discard()
            raise

    # -- repository links --------------------------------------------------

    def repository_exists(self, name: str) -> bool:
        return self.backend.has_prefix(Keys.repository(name))

    def has_layer(self, name: str, digest: Digest) -> bool:
        return (self.backend.get_record(Keys.layer_link(name, digest)) is not None
                and self.size(digest) is not None)

    def layer_size(self, name: str, digest: Digest, *, touch: bool = False) -> int | None:
        """The blob's size when `name` may serve it, else None; `touch` as a writer
        about to rely on the answer does (`touch_layer`). The link is asked first: it
        is the one more often missing, and the cheaper call on an object store."""
        if touch:
            found = self.touch_layer(name, digest)
        else:
            found = self.backend.get_record(Keys.layer_link(name, digest)) is not None
        return self.size(digest) if found else None

    def touch_layer(self, name: str, digest: Digest) -> bool:
        """`has_layer`, for a writer about to rely on the answer: touches both."""
        with self.fences.blob(digest):
            return (self.backend.touch(Keys.blob(digest))
                    and self.backend.touch(Keys.layer_link(name, digest)))

    def link_layer(self, name: str, digest: Digest) -> None:
        with self.fences.blob(digest):
            self.backend.set_record(Keys.layer_link(name, digest), "")

    def mount(self, source: str, name: str, digest: Digest) -> bool:
        """Link a blob `source` may serve into `name`; False when it may not."""
        with self.fences.blob(digest):
            if not (self.backend.touch(Keys.blob(digest))
                    and self.backend.touch(Keys.layer_link(source, digest))):
                return False
            self.backend.set_record(Keys.layer_link(name, digest), "")
        return True

    def touch_manifest(self, name: str, digest: Digest) -> bool:
        """True when `name` holds the manifest; touches its link and bytes."""
        with self.fences.blob(digest):
            return (self.backend.touch(Keys.manifest_link(name, digest))
                    and self.backend.touch(Keys.blob(digest)))

    def unlink_layer(self, name: str, digest: Digest) -> bool:
        return self.backend.delete(Keys.layer_link(name, digest))

    def manifest_media_type(self, name: str, digest: Digest) -> str | None:
        return self.backend.get_record(Keys.manifest_link(name, digest))

    def link_manifest(self, name: str, digest: Digest, media_type: str) -> bool:
        """Link a manifest into a repository; True when the link is new."""
        key = Keys.manifest_link(name, digest)
        current = self.manifest_media_type(name, digest)
        if current == media_type and self.backend.touch(key):
            return False
        self.backend.set_record(key, media_type)
        return current is None

    @contextlib.contextmanager
    def manifest_lock(self, name: str, digest: Digest) -> Iterator[None]:
        """Exclusive across every process sharing the backend; 256 stripes."""
        with self.backend.lock(Keys.manifest_lock(name, digest)):
            yield

    def manifest_links(self, name: str) -> list[Digest]:
        """Every manifest linked into `name`; a key of another shape is skipped."""
        prefix = Keys.manifest_links(name)
        found = []
        for info in self.backend.list(prefix):
            algorithm, _, hexpart = info.key[len(prefix):].partition("/")
            with contextlib.suppress(errors.DigestInvalid):
                found.append(parse_digest(f"{algorithm}:{hexpart}"))
        return found

    def unlink_manifest(self, name: str, digest: Digest) -> bool:
        return self.backend.delete(Keys.manifest_link(name, digest))

    def writable(self) -> bool:
        return self.backend.ready()[0]
