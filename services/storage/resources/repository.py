"""DELETE /api/v1/repositories/<name>: a whole repository, every tag and manifest.

Not part of the distribution spec, which has no repository delete; the shape
is the one Quay and Harbor users know (``DELETE .../repositories/<name>``).
Each manifest goes as a manifest DELETE does (under its lock, the index's
entry first, then the link), so a concurrent push of a manifest either
lands before and is deleted with the rest, or lands after and stays, with
its repository. What the manifests named is then the garbage collector's:
the layer links and blobs go in its next run, after the grace period, which
also lets a push in progress into the same name finish.
"""

from __future__ import annotations

import json

import falcon

from services.storage.blobstore import BlobStore
from services.storage.index_client import IndexClient
from services.storage.notifier import Notifier
from services.storage.resources.common import check_deletes
from shared import errors
from shared.validation import check_name, parse_digest


class RepositoryResource:
    def __init__(self, blobs: BlobStore, index: IndexClient, *, delete_enabled: bool,
                 notifier: Notifier) -> None:
        self._blobs = blobs
        self._index = index
        self._delete_enabled = delete_enabled
        self._notifier = notifier

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        check_deletes(self._delete_enabled)
        check_name(name)
        digests = set(self._index.repository_manifests(name))
        digests.update(str(d) for d in self._blobs.manifest_links(name))
        if not digests and not self._blobs.repository_exists(name):
            raise errors.NameUnknown(detail={"name": name})
        for value in sorted(digests):
            digest = parse_digest(value)
            with self._blobs.manifest_lock(name, digest):
                # Webhook events as a manifest DELETE makes them (docs/webhooks.md).
                self._index.delete_manifest(
                    name, value, self._notifier.manifest_deleted(req, name, value))
                self._blobs.unlink_manifest(name, digest)
        forgotten = self._index.forget_repository(name)
        # The index's events went out before the unlinks: announce them again.
        self._index.repository_changed(name)
        self._notifier.repository_deleted(req, name)
        resp.status = falcon.HTTP_202
        resp.content_type = "application/json"
        resp.data = json.dumps({"repository": name, "manifests_deleted": len(digests),
                                "removed_from_catalog": forgotten}).encode()
