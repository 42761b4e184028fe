"""Scenario 7: skopeo copy (OCI and v2s2, cross-repository), inspect, list-tags, delete."""

from __future__ import annotations

import json
import time

import pytest

from .clients import Skopeo
from .images import ImageFactory
from .registries import DOCKER_MANIFEST, OCI_MANIFEST, Registry, get_manifest, http
from .tools import ON_BOTH_BACKENDS

pytestmark = pytest.mark.e2e

NO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


def _docker(registry: Registry, repo: str, tag: str | None = None) -> str:
    return f"docker://{registry.ref(repo, tag)}"


@ON_BOTH_BACKENDS
def test_copy_inspect_list_tags_delete(
    registry: Registry, skopeo: Skopeo, images: ImageFactory
) -> None:
    image = images.image("skopeo")
    layout = images.oci_layout("skopeo")
    layout.tag(layout.add_image(image), "v1")

    for fmt, repo in (("oci", "e2e/skopeo-oci"), ("v2s2", "e2e/skopeo-v2s2")):
        skopeo("copy", *NO_TLS, "--format", fmt, layout.ref("v1"), _docker(registry, repo, "v1"))
    skopeo(
        "copy",
        *NO_TLS,
        _docker(registry, "e2e/skopeo-oci", "v1"),
        _docker(registry, "e2e/skopeo-oci", "v2"),
    )

    raw_oci = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", "--raw", _docker(registry, "e2e/skopeo-oci", "v1")
        ).stdout
    )
    raw_v2s2 = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", "--raw", _docker(registry, "e2e/skopeo-v2s2", "v1")
        ).stdout
    )
    assert raw_oci["mediaType"] == OCI_MANIFEST
    assert raw_v2s2["mediaType"] == DOCKER_MANIFEST
    assert [layer["mediaType"] for layer in raw_v2s2["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ] * len(image.layers)

    info = json.loads(
        skopeo("inspect", "--tls-verify=false", _docker(registry, "e2e/skopeo-oci", "v1")).stdout
    )
    assert info["Digest"] == get_manifest(registry, "e2e/skopeo-oci", "v1").digest
    assert info["Architecture"] == "amd64"
    assert len(info["Layers"]) == len(image.layers)
    assert sorted(info["RepoTags"]) == ["v1", "v2"]

    # Copy within the registry: skopeo knows where the blobs are and mounts them.
    copied = skopeo(
        "--debug",
        "copy",
        *NO_TLS,
        _docker(registry, "e2e/skopeo-oci", "v1"),
        _docker(registry, "e2e/skopeo-copy", "v1"),
    )
    assert "mount OK" in copied.stderr, copied.stderr[-3000:]

    tags = json.loads(
        skopeo("list-tags", "--tls-verify=false", _docker(registry, "e2e/skopeo-oci")).stdout
    )
    assert sorted(tags["Tags"]) == ["v1", "v2"]

    digest = get_manifest(registry, "e2e/skopeo-copy", "v1").digest
    skopeo("delete", "--tls-verify=false", _docker(registry, "e2e/skopeo-copy", "v1"))
    gone = skopeo(
        "inspect", "--tls-verify=false", _docker(registry, "e2e/skopeo-copy", "v1"), check=False
    )
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower(), gone.stderr
    assert http(registry, "GET", f"/v2/e2e/skopeo-copy/manifests/{digest}").status == 404
    # The same manifest in another repository is untouched.
    assert get_manifest(registry, "e2e/skopeo-oci", "v1").digest == digest


def test_plain_http_is_found_without_waiting(registry: Registry, skopeo: Skopeo) -> None:
    """With TLS verification off, containers/image (and dockerd) try HTTPS first and
    fall back to plain HTTP when the handshake fails. A server that never answers the
    TLS ClientHello makes every command wait out the 10 s handshake timeout."""
    started = time.monotonic()
    probe = skopeo(
        "list-tags", "--tls-verify=false", _docker(registry, "e2e/no-such-repo"), check=False
    )
    elapsed = time.monotonic() - started
    assert "handshake timeout" not in probe.stderr, probe.stderr
    assert elapsed < 5, f"skopeo took {elapsed:.1f}s to reach the registry over plain HTTP"
