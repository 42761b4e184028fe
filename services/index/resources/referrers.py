"""GET /v2/<name>/referrers/<digest>: the manifests whose subject is <digest>."""

from __future__ import annotations

import json

import falcon

from services.index.store import IndexStore
from shared.events import CACHEABLE_HEADER
from shared.validation import check_name, parse_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


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
            if wanted and meta.get("artifact_type") != wanted:
                continue
            descriptor = {"mediaType": meta["media_type"], "digest": ref_digest,
                          "size": meta["size"]}
            if meta.get("artifact_type"):
                descriptor["artifactType"] = meta["artifact_type"]
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
