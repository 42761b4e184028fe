"""GET /v2/<name>/referrers/<digest>: the manifests whose subject is <digest>.

A descriptor's ``artifactType`` follows the spec: the manifest's own
``artifactType``, else, for an image manifest, its config's ``mediaType``.
The ``artifactType`` filter compares against that same value.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from services.index.store import IndexStore
from shared.events import CACHEABLE_HEADER
from shared.validation import check_name, parse_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# The config type an image manifest of each kind carries, for records stored
# before the config's mediaType was: their artifact_type is empty only when the
# config was an image config (see `services.storage.manifest_format`).
_IMAGE_CONFIG = {
    "application/vnd.oci.image.manifest.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json":
        "application/vnd.docker.container.image.v1+json",
}


def artifact_type(meta: dict[str, Any]) -> str | None:
    """The artifactType the referrers API reports for a manifest's metadata."""
    return (meta.get("artifact_type") or meta.get("config_media_type")
            or _IMAGE_CONFIG.get(meta.get("media_type", "")))


class ReferrersResource:
    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               digest: str) -> None:
        check_name(name)
        subject = str(parse_digest(digest))
        wanted = req.get_param("artifactType")
        descriptors = []
        for ref_digest, meta in self._store.referrers(name, subject):
            kind = artifact_type(meta)
            if wanted and kind != wanted:
                continue
            descriptor = {"mediaType": meta["media_type"], "digest": ref_digest,
                          "size": meta["size"]}
            if kind:
                descriptor["artifactType"] = kind
            if meta.get("annotations"):
                descriptor["annotations"] = meta["annotations"]
            descriptors.append(descriptor)
        if wanted:
            resp.set_header("OCI-Filters-Applied", "artifactType")
        resp.set_header(CACHEABLE_HEADER, "1")
        resp.content_type = OCI_INDEX
        resp.data = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        ).encode()
