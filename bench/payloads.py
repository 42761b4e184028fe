"""Content the workloads push: random blobs, a small image, unique manifests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# What a docker/containerd client sends when pulling; the reference refuses
# to serve an OCI manifest to a client that does not accept the OCI type.
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    digest: str
    media_type: str = "application/octet-stream"

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def random_blob(size: int) -> Blob:
    """Fresh random bytes: every push has a digest no registry has seen before."""
    data = os.urandom(size)
    return Blob(data, sha256_digest(data))


def tiny_image() -> tuple[Blob, Blob]:
    """A real (tiny) image: a gzipped tar layer and a config naming its diff_id.

    Real content, not random bytes, so a registry that inspects configs or
    layers (e.g. for indexing) sees what a docker client would push.
    """
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        payload = os.urandom(512)
        info = tarfile.TarInfo("bench/payload.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = tar_buf.getvalue()
    layer_bytes = gzip.compress(tar_bytes, mtime=0)
    layer = Blob(layer_bytes, sha256_digest(layer_bytes), OCI_LAYER)
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar_bytes)]},
        "history": [{"created_by": "dockyard bench"}],
    }
    config_bytes = json.dumps(config_doc, separators=(",", ":"), sort_keys=True).encode()
    config = Blob(config_bytes, sha256_digest(config_bytes), OCI_CONFIG)
    return config, layer


def manifest(config: Blob, layers: list[Blob], annotations: dict[str, str]) -> bytes:
    """OCI image manifest; distinct annotations make distinct digests."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": annotations,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
