"""PUT, GET, HEAD and DELETE of /v2/<name>/manifests/<reference>.

Storage keeps a manifest's bytes; the index records tags and metadata. A PUT
writes the bytes and the repository link first and tells the index second, so
the index never names a manifest storage cannot serve.
"""

from __future__ import annotations

import hashlib

import falcon

from services.storage import image_labels
from services.storage import manifest_format as mf
from services.storage.blobstore import BlobStore
from services.storage.index_client import IndexClient
from services.storage.notifier import Notifier
from services.storage.resources.common import check_deletes
from shared import errors
from shared.events import CACHE_WANTED_HEADER, CACHEABLE_HEADER
from shared.urls import external_url
from shared.validation import (
    Digest,
    check_name,
    check_tag,
    is_digest_reference,
    is_valid_tag,
    parse_digest,
)


class ManifestResource:
    def __init__(self, blobs: BlobStore, index: IndexClient, *, max_size: int,
                 delete_enabled: bool, notifier: Notifier) -> None:
        self._blobs = blobs
        self._index = index
        self._notifier = notifier
        self._max_size = max_size
        self._delete_enabled = delete_enabled

    # -- PUT -----------------------------------------------------------------

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str,
               reference: str) -> None:
        check_name(name)
        expected = parse_digest(reference) if is_digest_reference(reference) else None
        tag = None if expected else check_tag(reference)
        length = req.content_length or 0
        if length > self._max_size:
            raise errors.ManifestTooLarge(detail={"size": length, "limit": self._max_size})
        body = req.stream.read(length) if length else b""
        if len(body) != length:
            raise errors.SizeInvalid()
        manifest = mf.parse(body, req.content_type)

        algorithm = expected.algorithm if expected else "sha256"
        digest = Digest(algorithm, hashlib.new(algorithm, body).hexdigest())
        if expected is not None and digest != expected:
            raise errors.DigestInvalid(detail={"expected": str(expected),
                                               "computed": str(digest)})
        # From the first touch of what it references until the index has the
        # record, the PUT holds the collector's barrier off (`fences`): a
        # collection either sees this manifest in the index or sees every file
        # it relies on touched after the collection began.
        with self._blobs.fences.writing():
            self._check_references(name, manifest)
            # Search indexes a tagged image's labels; a push by digest sets no description.
            labels = image_labels.labels(self._blobs, name, manifest) if tag else {}
            self._blobs.ingest_bytes(body, digest)
            event = self._notifier.manifest_pushed(req, name, str(digest), manifest.media_type,
                                                   len(body), tag)
            with self._blobs.manifest_lock(name, digest):
                self._link_and_record(name, digest, tag, manifest, len(body), labels, event)
        resp.status = falcon.HTTP_201
        resp.location = external_url(req, f"/v2/{name}/manifests/{digest}")
        resp.set_header("Docker-Content-Digest", str(digest))
        if manifest.subject:
            resp.set_header("OCI-Subject", str(manifest.subject))
        resp.content_length = 0

    def record(self, name: str, digest: Digest, tag: str | None, manifest: mf.Manifest,
               size: int, labels: dict[str, str]) -> None:
        """Link and record a manifest whose bytes are stored (the pull-through cache's:
        no push event, since no client pushed it)."""
        with self._blobs.manifest_lock(name, digest):
            self._link_and_record(name, digest, tag, manifest, size, labels, None)

    def _link_and_record(self, name: str, digest: Digest, tag: str | None,
                         manifest: mf.Manifest, size: int, labels: dict[str, str],
                         event: str | None) -> None:
        """Link the manifest into the repository, then record it in the index,
        with its push event when webhooks are on.

        Called under the manifest's lock, so a DELETE of the same digest runs
        wholly before or wholly after it.
        """
        created = self._blobs.link_manifest(name, digest, manifest.media_type)
        record = {
            "repo": name,
            "digest": str(digest),
            "tag": tag,
            "media_type": manifest.media_type,
            "size": size,
            "artifact_type": manifest.artifact_type,
            "config_media_type": manifest.config_media_type,
            "annotations": manifest.annotations,
            "subject": str(manifest.subject) if manifest.subject else None,
            "refs": [str(d) for d in manifest.blobs + manifest.manifests],
            "blob_sizes": manifest.blob_sizes,
            "platforms": [mf.platform_name(p) for _, p in manifest.platforms],
            "labels": labels,
        }
        if event:
            record["event"] = event
        try:
            self._index.put_manifest(record)
        except errors.Unavailable as e:
            # Undo what only this request did, so a refused push leaves nothing
            # behind; unless the index may have recorded it before failing, as a
            # tag naming a manifest storage lacks would be worse than a stray link.
            if created and not e.maybe_applied:
                self._blobs.unlink_manifest(name, digest)
                self._index.repository_changed(name)
            raise

    def _check_references(self, name: str, manifest: mf.Manifest) -> None:
        for d in manifest.blobs:
            if not self._blobs.touch_layer(name, d):
                raise errors.ManifestBlobUnknown(detail={"digest": str(d)})
        for d in manifest.manifests:
            if not self._blobs.touch_manifest(name, d):
                raise errors.ManifestBlobUnknown(detail={"digest": str(d)})

    # -- GET / HEAD ----------------------------------------------------------

    def _resolve(self, name: str, reference: str,
                 cache_wanted: bool) -> tuple[Digest, str, bool]:
        """The manifest's digest and media type, and whether the answer may be cached.

        It may when the router asked (`cache_wanted`), unless a tag was resolved
        by this process's own cache, which may not have seen the event the
        router just handled: then the index is asked instead. A manifest by
        digest is what the disk holds; a DELETE announces itself again once the
        bytes are unlinked (see `on_delete`).
        """
        check_name(name)
        _check_read_reference(reference)
        if is_digest_reference(reference):
            digest = parse_digest(reference)
            vouched = True
        else:
            resolved = self._index.resolve_tag(name, reference, ask_index=cache_wanted)
            digest, vouched = parse_digest(resolved.digest), resolved.from_index
        media_type = self._blobs.manifest_media_type(name, digest)
        if media_type is None:
            if not self._blobs.repository_exists(name):
                raise errors.NameUnknown(detail={"name": name})
            raise errors.ManifestUnknown(detail={"reference": reference})
        return digest, media_type, cache_wanted and vouched

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               reference: str) -> None:
        digest, media_type, cacheable = self._resolve(
            name, reference, req.get_header(CACHE_WANTED_HEADER) is not None)
        body = self._blobs.read(digest)
        accept = mf.parse_accept(req.get_header("Accept"))
        if media_type in mf.INDEX_TYPES and _wants_single_image(accept):
            chosen = self._default_platform(name, body)
            if chosen is not None:
                digest, media_type, body = chosen
                # The index did not vouch for this child manifest: not cached.
                cacheable = False
        etag = f'"{digest}"'
        resp.set_header("Docker-Content-Digest", str(digest))
        resp.set_header("ETag", etag)
        resp.content_type = media_type
        if req.get_header("If-None-Match") == etag:
            resp.status = falcon.HTTP_304
            return
        if cacheable:
            resp.set_header(CACHEABLE_HEADER, "1")
        resp.data = body
        self._notifier.manifest_pulled(req, name, str(digest), media_type, len(body),
                                       None if is_digest_reference(reference) else reference)

    def on_head(self, req: falcon.Request, resp: falcon.Response, name: str,
                reference: str) -> None:
        self.on_get(req, resp, name, reference)

    def _default_platform(self, name: str, body: bytes) -> tuple[Digest, str, bytes] | None:
        """linux/amd64 of an index, for old clients that cannot read an index."""
        for digest, platform in mf.parse(body, None).platforms:
            if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                media_type = self._blobs.manifest_media_type(name, digest)
                if media_type is not None:
                    return digest, media_type, self._blobs.read(digest)
        return None

    # -- DELETE --------------------------------------------------------------

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  reference: str) -> None:
        check_deletes(self._delete_enabled)
        check_name(name)
        _check_read_reference(reference)
        if is_digest_reference(reference):
            digest = parse_digest(reference)
            with self._blobs.manifest_lock(name, digest):
                if self._blobs.manifest_media_type(name, digest) is None:
                    raise errors.ManifestUnknown(detail={"digest": reference})
                self._index.delete_manifest(
                    name, str(digest), self._notifier.manifest_deleted(req, name, str(digest)))
                self._blobs.unlink_manifest(name, digest)
                # The index's event went out before the unlink; a cache that read
                # the manifest in between learns of the change from this one.
                self._index.repository_changed(name)
        else:
            if not self._index.delete_tag(name, reference,
                                          self._notifier.tag_deleted(req, name, reference)):
                raise errors.ManifestUnknown(detail={"tag": reference})
        resp.status = falcon.HTTP_202
        resp.content_length = 0


def _check_read_reference(reference: str) -> None:
    """A reference that is no valid tag or digest names no manifest: the spec's 404.

    Only a PUT refuses an invalid tag with a 400; a GET, HEAD or DELETE asks
    for something that cannot exist (conformance tools probe exactly this).
    """
    if is_digest_reference(reference):
        try:
            parse_digest(reference)
        except errors.DigestInvalid:
            raise errors.ManifestUnknown(detail={"reference": reference[:300]}) from None
    elif not is_valid_tag(reference):
        raise errors.ManifestUnknown(detail={"reference": reference[:300]})


def _wants_single_image(accept: set[str]) -> bool:
    """True for a client that names image manifests but no index type or wildcard."""
    if not accept or "*/*" in accept or accept & mf.INDEX_TYPES:
        return False
    return bool(accept & mf.IMAGE_TYPES)

