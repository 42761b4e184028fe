"""Scenario 10: ORAS artifacts: chunked and single-request pushes, pull, referrers, tag delete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .registries import OCI_INDEX, OCI_MANIFEST, Registry, get_manifest, http
from .tools import ON_BOTH_BACKENDS, record_python_version, require_python_module

pytestmark = pytest.mark.e2e

SBOM_TYPE = "application/vnd.dockyard.e2e.sbom+json"


def _artifact_files(directory: Path, label: str) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "readme.txt": f"{label} artifact\n".encode(),
        # Not a multiple of the chunk size, so the last PATCH is a short one.
        "payload.bin": os.urandom(3 * (1 << 20) + 12345),
        "meta.json": b'{"label": "%s"}\n' % label.encode(),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


@ON_BOTH_BACKENDS
def test_push_pull_referrers_and_delete(registry: Registry, e2e_root: Path) -> None:
    require_python_module("oras", "oras")
    record_python_version("oras (Python SDK)", "oras")
    import oras.client
    import oras.oci

    work = e2e_root / f"oras-{registry.port}"  # one per registry under test
    client = oras.client.OrasClient(hostname=registry.addr, insecure=True)

    pushed: dict[str, dict[str, bytes]] = {}
    for repo, chunked in (("e2e/oras-chunked", True), ("e2e/oras-single", False)):
        src = work / repo.split("/")[1]
        pushed[repo] = _artifact_files(src, repo)
        client.push(
            target=registry.ref(repo, "v1"),
            files=[str(src / name) for name in sorted(pushed[repo])],
            disable_path_validation=True,
            do_chunked=chunked,
            chunk_size=1 << 20,
            quiet=True,
        )

    for repo, files in pushed.items():
        out = work / "pulled" / repo.split("/")[1]
        paths = client.pull(target=registry.ref(repo, "v1"), outdir=str(out))
        assert sorted(Path(p).name for p in paths) == sorted(files)
        for name, data in files.items():
            assert (out / name).read_bytes() == data, name

    # An artifact about the chunked one, linked through `subject`.
    subject = get_manifest(registry, "e2e/oras-chunked", "v1")
    assert subject.body["mediaType"] == OCI_MANIFEST
    sbom_dir = work / "sbom"
    sbom_dir.mkdir()
    (sbom_dir / "sbom.json").write_text('{"packages": []}\n')
    (sbom_dir / "config.json").write_text("{}")
    response = client.push(
        target=registry.ref("e2e/oras-chunked", "sbom"),
        files=[str(sbom_dir / "sbom.json")],
        manifest_config=f"{sbom_dir / 'config.json'}:{SBOM_TYPE}",
        subject=oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subject.digest, size=subject.size),
        disable_path_validation=True,
        quiet=True,
    )
    referrer = get_manifest(registry, "e2e/oras-chunked", "sbom")
    assert referrer.body["subject"]["digest"] == subject.digest

    listing = http(registry, "GET", f"/v2/e2e/oras-chunked/referrers/{subject.digest}")
    assert listing.status == 200, (listing.status, listing.body[:500])
    assert listing.headers.get("content-type", "").startswith(OCI_INDEX)
    found = {m["digest"]: m for m in listing.json()["manifests"]}
    assert referrer.digest in found, found
    assert found[referrer.digest].get("artifactType") == SBOM_TYPE, found[referrer.digest]
    # Registries that understand `subject` say so, or clients fall back to tag schemes.
    assert response.headers.get("OCI-Subject") == subject.digest, dict(response.headers)

    assert client.delete_tag(registry.ref("e2e/oras-single"), "v1")
    assert "v1" not in client.get_tags(registry.ref("e2e/oras-single"))
    assert http(registry, "GET", "/v2/e2e/oras-single/manifests/v1").status == 404
