"""A small OCI distribution client over urllib3 for tests: every call returns the raw
response so tests can assert on status, headers and body."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import urlsplit

import urllib3

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signed_headers(signer: Any, method: str, url: str, headers: dict[str, str],
                   body: Any = None) -> dict[str, str]:
    """The service signature header for a request to `url` (see shared/service_auth.py)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(body, str):
        body = body.encode()
    return {"X-Dockyard-Signature": signer.sign(method, target, headers.items(), body)}


class RegistryClient:
    """`signer` (a `shared.service_auth.ServiceKey`) signs every request, as dockyard's
    own services do: for talking to storage or the index directly."""

    def __init__(self, base_url: str, timeout: float = 60.0, signer: Any = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = urllib3.PoolManager(retries=False, timeout=timeout, maxsize=32)
        self.signer = signer

    def request(self, method: str, url: str, body: Any = None,
                headers: dict[str, str] | None = None, **kw: Any) -> urllib3.BaseHTTPResponse:
        if url.startswith("/"):
            url = self.base + url
        headers = dict(headers or {})
        if self.signer is not None:
            headers.update(signed_headers(self.signer, method, url, headers, body))
        return self.http.request(method, url, body=body, headers=headers,
                                 redirect=False, **kw)

    # -- blobs ---------------------------------------------------------------

    def push_blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201, (r.status, r.data)
        return digest

    def start_upload(self, name: str) -> str:
        r = self.request("POST", f"/v2/{name}/blobs/uploads/")
        assert r.status == 202, (r.status, r.data)
        return r.headers["Location"]

    def random_blob(self, name: str, size: int = 1024) -> tuple[str, bytes]:
        data = os.urandom(size)
        return self.push_blob(name, data), data

    # -- manifests -----------------------------------------------------------

    def image_manifest(self, name: str, layers: int = 1, annotations: dict | None = None,
                       subject: dict | None = None, artifact_type: str | None = None) -> bytes:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []},
                             "nonce": os.urandom(8).hex()}).encode()
        config_digest = self.push_blob(name, config)
        layer_descs = []
        for _ in range(layers):
            digest, data = self.random_blob(name, 256)
            layer_descs.append({"mediaType": OCI_LAYER, "digest": digest, "size": len(data)})
        doc: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layer_descs,
        }
        if annotations:
            doc["annotations"] = annotations
        if subject:
            doc["subject"] = subject
        if artifact_type:
            doc["artifactType"] = artifact_type
        return json.dumps(doc).encode()

    def put_manifest(self, name: str, reference: str, body: bytes,
                     media_type: str = OCI_MANIFEST) -> urllib3.BaseHTTPResponse:
        return self.request("PUT", f"/v2/{name}/manifests/{reference}", body=body,
                            headers={"Content-Type": media_type})

    def push_image(self, name: str, tag: str, **kw: Any) -> tuple[str, bytes]:
        body = self.image_manifest(name, **kw)
        r = self.put_manifest(name, tag, body)
        assert r.status == 201, (r.status, r.data)
        return r.headers["Docker-Content-Digest"], body

    def get_manifest(self, name: str, reference: str,
                     accept: str = f"{OCI_MANIFEST}, {OCI_INDEX}") -> urllib3.BaseHTTPResponse:
        return self.request("GET", f"/v2/{name}/manifests/{reference}",
                            headers={"Accept": accept})

    def json(self, method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
        r = self.request(method, url, **kw)
        try:
            body = json.loads(r.data) if r.data else None
        except ValueError:
            body = r.data
        return r.status, r.headers, body


def error_code(body: Any) -> str:
    """The code of an OCI error body, checking the body's shape on the way."""
    assert isinstance(body, dict) and isinstance(body.get("errors"), list), body
    entry = body["errors"][0]
    assert set(entry) >= {"code", "message", "detail"}, entry
    return entry["code"]
