"""What the browser tests look at: images pushed through the registry API, with
a config that has an entrypoint, environment and labels, a two-platform index
signed by a referrer, and an XSS payload in every field a pusher controls."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.registry_client import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    sha256,
)

# Each assigns window.__xss if it ever runs as script or markup.
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
COSIGN = "application/vnd.dev.cosign.artifact.sig.v1+json"
DESCRIPTION = "org.opencontainers.image.description"


@dataclass
class Seed:
    prefix: str
    app: str  # the repository with tags alpha (older), zeta (newer) and multi
    digests: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)


def _descriptor(media_type: str, data: bytes, digest: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def push_image(client: RegistryClient, name: str, reference: str | None, *, arch: str = "amd64",
               variant: str | None = None, config_extra: dict | None = None,
               annotations: dict | None = None, subject: dict | None = None,
               artifact_type: str | None = None, layer_size: int = 2048) -> tuple[str, int]:
    """Push one image (by digest when `reference` is None); answers its digest and
    the bytes a pull of it moves."""
    if artifact_type:
        config, config_type = b"{}", "application/vnd.oci.empty.v1+json"
    else:
        doc = {"architecture": arch, "os": "linux", "created": "2026-01-02T03:04:05Z",
               "rootfs": {"type": "layers", "diff_ids": []}, "nonce": os.urandom(8).hex(),
               **(config_extra or {})}
        if variant:
            doc["variant"] = variant
        config, config_type = json.dumps(doc).encode(), OCI_CONFIG
    layer = os.urandom(layer_size)
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor(config_type, config, client.push_blob(name, config)),
        "layers": [_descriptor(OCI_LAYER, layer, client.push_blob(name, layer))],
    }
    for key, value in (("annotations", annotations), ("subject", subject),
                       ("artifactType", artifact_type)):
        if value:
            manifest[key] = value
    body = json.dumps(manifest).encode()
    r = client.put_manifest(name, reference or sha256(body), body)
    assert r.status == 201, (r.status, r.data)
    return r.headers["Docker-Content-Digest"], len(body) + len(config) + len(layer)


def seed(client: RegistryClient) -> Seed:
    prefix = f"webui-{uuid.uuid4().hex[:8]}"
    s = Seed(prefix, f"{prefix}/app")
    config = {"config": {"Entrypoint": ["/bin/serve", "--port=8080"], "Cmd": ["run"],
                         "Env": ["PATH=/usr/bin", f"GREETING={XSS}"],
                         "Labels": {"org.example.team": "yard", f"x{XSS}": XSS}}}
    annotations = {DESCRIPTION: f"The demo app {XSS}", f"note{XSS}": XSS}
    s.digests["alpha"], s.sizes["alpha"] = push_image(
        client, s.app, "alpha", config_extra=config, annotations=annotations)
    time.sleep(0.05)  # distinct push times, for sorting
    s.digests["zeta"], s.sizes["zeta"] = push_image(client, s.app, "zeta", config_extra=config,
                                                    annotations=annotations)
    children = []
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        digest, size = push_image(client, s.app, None, arch=arch, variant=variant)
        s.digests[arch], s.sizes[arch] = digest, size
        platform = {"os": "linux", "architecture": arch, **({"variant": variant}
                                                            if variant else {})}
        manifest = client.get_manifest(s.app, digest).data
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                         "platform": platform})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
                        "annotations": {f"i{XSS}": XSS,
                                        DESCRIPTION: f"The demo app {XSS}"}}).encode()
    r = client.put_manifest(s.app, "multi", index, OCI_INDEX)
    assert r.status == 201, (r.status, r.data)
    s.digests["multi"] = r.headers["Docker-Content-Digest"]
    s.sizes["multi"] = len(index) + s.sizes["amd64"] + s.sizes["arm64"]
    subject = {"mediaType": OCI_INDEX, "digest": s.digests["multi"], "size": len(index)}
    s.digests["signature"], _ = push_image(
        client, s.app, None, subject=subject, artifact_type=COSIGN,
        annotations={"dev.sigstore.cosign/signer": XSS})
    for name in ("findme-one", "findme-two", "elsewhere"):
        repo = f"{prefix}/{name}"
        push_image(client, repo, "latest", annotations={DESCRIPTION: f"{name} {XSS}"})
        s.others.append(repo)
    return s
