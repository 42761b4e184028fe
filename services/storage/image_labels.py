"""The labels of an image's config, which search indexes as its description and title.

`docker build`, `buildah` and `podman build` put `LABEL` values in the image
config (``config.Labels``), not in manifest annotations, so a push of such an
image tells the index its labels as well (see `services.index.search`).

Rules:

- At most one config is read per push. For an image manifest, its own config;
  for an index (a multi-platform image), the config of one child: the first
  with a real platform (attestation manifests are ``unknown/unknown``), else
  the first image manifest among them. The children were pushed before the
  index, so their bytes are on this disk already.
- Only image configs (OCI or Docker) are read, and only up to
  `MAX_CONFIG_SIZE` bytes; an artifact's config is no image config.
- Labels are best effort: a config that is missing, too large or not the
  JSON it should be gives no labels, and never fails the push.
- What goes to the index is bounded: `MAX_LABELS` labels, each value cut to
  `MAX_VALUE_LENGTH` characters, the description to `MAX_DESCRIPTION_LENGTH`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from services.storage import manifest_format as mf
from services.storage.blobstore import BlobStore
from shared import errors
from shared.validation import Digest

log = logging.getLogger("dockyard.storage.labels")

IMAGE_CONFIG_TYPES = frozenset({
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
})
MAX_CONFIG_SIZE = 1024 * 1024
MAX_LABELS = 64
MAX_VALUE_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 2000


def labels(blobs: BlobStore, name: str, manifest: mf.Manifest) -> dict[str, str]:
    """The config labels of the image `manifest` (just parsed, being pushed to `name`)."""
    try:
        image = manifest if manifest.media_type in mf.IMAGE_TYPES else _child(blobs, name,
                                                                               manifest)
        if image is None or image.config is None:
            return {}
        if image.config_media_type not in IMAGE_CONFIG_TYPES:
            return {}
        return _read_labels(blobs, image.config)
    except (OSError, ValueError, RecursionError) as e:
        log.info("no labels for a manifest pushed to %s: %s", name, e)
        return {}


def _child(blobs: BlobStore, name: str, index: mf.Manifest) -> mf.Manifest | None:
    """The one child of an index whose config is read."""
    real = [d for d, p in index.platforms if p.get("os") not in (None, "unknown")]
    for digest in real + index.manifests:
        media_type = blobs.manifest_media_type(name, digest)
        if media_type in mf.IMAGE_TYPES:
            try:
                return mf.parse(blobs.read(digest), media_type)
            except errors.RegistryError:
                return None
    return None


def _read_labels(blobs: BlobStore, config: Digest) -> dict[str, str]:
    size = blobs.size(config)
    if size is None or size > MAX_CONFIG_SIZE:
        return {}
    doc: Any = json.loads(blobs.read(config))
    config_part = doc.get("config") if isinstance(doc, dict) else None
    found = config_part.get("Labels") if isinstance(config_part, dict) else None
    if not isinstance(found, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in sorted(found.items()):
        if len(out) >= MAX_LABELS:
            break
        if isinstance(key, str) and isinstance(value, str) and value:
            limit = (MAX_DESCRIPTION_LENGTH if key == mf.DESCRIPTION_ANNOTATION
                     else MAX_VALUE_LENGTH)
            out[key[:MAX_VALUE_LENGTH]] = value[:limit]
    return out
