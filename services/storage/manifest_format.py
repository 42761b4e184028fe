"""Parsing and checking manifests of the four kinds a registry must accept."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared import errors
from shared.validation import Digest, parse_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

DESCRIPTION_ANNOTATION = "org.opencontainers.image.description"


@dataclass
class Manifest:
    media_type: str
    blobs: list[Digest] = field(default_factory=list)
    manifests: list[Digest] = field(default_factory=list)
    subject: Digest | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    platforms: list[tuple[Digest, dict[str, Any]]] = field(default_factory=list)
    # Each blob's size as its descriptor declares it, for the index's size
    # summaries (what `docker images` and registry UIs report too).
    blob_sizes: dict[str, int] = field(default_factory=dict)
    # An image manifest's config descriptor: its digest and mediaType.
    config: Digest | None = None
    config_media_type: str | None = None


def _descriptor(obj: Any, where: str) -> tuple[Digest, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise errors.ManifestInvalid(detail={"reason": f"{where} is not a descriptor"})
    digest = obj.get("digest")
    size = obj.get("size")
    media_type = obj.get("mediaType")
    if not isinstance(digest, str):
        raise errors.ManifestInvalid(detail={"reason": f"{where}.digest missing"})
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errors.ManifestInvalid(detail={"reason": f"{where}.size invalid"})
    if media_type is not None and not isinstance(media_type, str):
        raise errors.ManifestInvalid(detail={"reason": f"{where}.mediaType invalid"})
    try:
        return parse_digest(digest), obj
    except errors.DigestInvalid:
        raise errors.ManifestInvalid(detail={"reason": f"{where}.digest invalid"}) from None


def _normalise_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";")[0].strip().lower() or None


def parse(body: bytes, content_type: str | None) -> Manifest:
    """Check a manifest body and extract what the registry records about it."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: json's parser recurses per nesting level, so a body of
        # nothing but "[" would otherwise end as a 500.
        raise errors.ManifestInvalid(detail={"reason": "body is not valid JSON"}) from None
    if not isinstance(doc, dict):
        raise errors.ManifestInvalid(detail={"reason": "manifest is not a JSON object"})
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise errors.ManifestInvalid(detail={"reason": "mediaType is not a string"})
    header = _normalise_type(content_type)
    if header in ("application/json", "application/octet-stream"):
        header = None
    if declared and header and declared != header:
        raise errors.ManifestInvalid(
            detail={"reason": "mediaType does not match Content-Type",
                    "mediaType": declared, "contentType": header})
    media_type = declared or header
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise errors.ManifestInvalid(detail={"reason": "unsupported manifest media type",
                                             "mediaType": media_type[:200]})
    if doc.get("schemaVersion") != 2:
        raise errors.ManifestInvalid(detail={"reason": "schemaVersion must be 2"})

    manifest = Manifest(media_type=media_type)
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise errors.ManifestInvalid(detail={"reason": "annotations must map strings"})
        manifest.annotations = annotations
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise errors.ManifestInvalid(detail={"reason": "artifactType is not a string"})
    if "subject" in doc:
        manifest.subject, _ = _descriptor(doc["subject"], "subject")

    if media_type in IMAGE_TYPES:
        config_digest, config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise errors.ManifestInvalid(detail={"reason": "layers must be a list"})
        manifest.blobs.append(config_digest)
        manifest.blob_sizes[str(config_digest)] = config["size"]
        manifest.config = config_digest
        for i, layer in enumerate(layers):
            digest, desc = _descriptor(layer, f"layers[{i}]")
            # Foreign layers (with urls) live elsewhere by design.
            if not desc.get("urls"):
                manifest.blobs.append(digest)
                manifest.blob_sizes[str(digest)] = desc["size"]
        config_type = config.get("mediaType")
        manifest.config_media_type = config_type
        # An artifact's type: artifactType, else a config that is not an image config.
        manifest.artifact_type = artifact_type or (
            config_type if config_type and config_type not in (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json",
            ) else None
        )
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise errors.ManifestInvalid(detail={"reason": "manifests must be a list"})
        for i, child in enumerate(children):
            digest, desc = _descriptor(child, f"manifests[{i}]")
            manifest.manifests.append(digest)
            platform = desc.get("platform")
            if isinstance(platform, dict):
                manifest.platforms.append((digest, platform))
        manifest.artifact_type = artifact_type
    return manifest


def platform_name(platform: dict[str, Any]) -> str:
    """``os/architecture[/variant]``, as `docker pull --platform` spells it."""
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if isinstance(p, str) and p)[:200]


def parse_accept(values: list[str] | str | None) -> set[str]:
    """Media types a client accepts, from repeated or comma-joined Accept lines."""
    if not values:
        return set()
    if isinstance(values, str):
        values = [values]
    accepted = set()
    for line in values:
        for part in line.split(","):
            media = part.split(";")[0].strip().lower()
            if media:
                accepted.add(media)
    return accepted
