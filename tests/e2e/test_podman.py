"""Scenarios 4 (podman's half) and 5: podman search, push with compression, pull, run."""

from __future__ import annotations

import json

import pytest

from .clients import Podman
from .images import ImageFactory, greeting_for
from .registries import Registry, get_manifest

pytestmark = pytest.mark.e2e

TLS = "--tls-verify=false"


def _load(podman: Podman, images: ImageFactory, name: str, own_tool_layer: bool = False) -> str:
    local = f"localhost/e2e/{name}:local"
    image = images.image(name, own_tool_layer=own_tool_layer)
    podman("load", "--input", str(images.docker_archive(image, [local])))
    return local


def _layer_types(registry: Registry, repo: str, tag: str) -> set[str]:
    return {layer["mediaType"] for layer in get_manifest(registry, repo, tag).body["layers"]}


def test_push_compressed_pull_and_run(
    registry: Registry, podman: Podman, images: ImageFactory
) -> None:
    gzip_local = _load(podman, images, "podman-gzip")
    # podman 4.3 has no --force-compression: a layer already pushed as gzip would be
    # reused as is, so the zstd image shares no layer with anything pushed before.
    zstd_local = _load(podman, images, "podman-zstd", own_tool_layer=True)
    gzip_ref = registry.ref("e2e/podman", "gzip")
    zstd_ref = registry.ref("e2e/podman", "zstd")
    # Local storage keeps layers uncompressed: podman compresses while it uploads,
    # so the blob size is unknown when each upload starts.
    podman("push", TLS, gzip_local, gzip_ref)
    podman("push", TLS, "--format", "oci", "--compression-format", "zstd", zstd_local, zstd_ref)
    podman("rmi", "--force", gzip_local, zstd_local)

    gzip_types = _layer_types(registry, "e2e/podman", "gzip")
    zstd_types = _layer_types(registry, "e2e/podman", "zstd")
    assert all(t.endswith("gzip") for t in gzip_types), gzip_types
    assert zstd_types == {"application/vnd.oci.image.layer.v1.tar+zstd"}, zstd_types

    for ref, name in ((gzip_ref, "podman-gzip"), (zstd_ref, "podman-zstd")):
        podman("pull", TLS, ref)
        out = podman("run", *Podman.RUN_FLAGS, ref, timeout=120).stdout
        assert out == greeting_for(name)
        podman("rmi", "--force", ref)


def test_search_and_list_tags(registry: Registry, podman: Podman, images: ImageFactory) -> None:
    local = _load(podman, images, "podman-search")
    names = ["e2e/podfind-one", "e2e/podfind-two"]
    for ref in (
        registry.ref(names[0], "v1"),
        registry.ref(names[0], "v2"),
        registry.ref(names[1], "v1"),
    ):
        podman("push", TLS, local, ref)
    podman("rmi", "--force", local)

    term = f"{registry.addr}/podfind"
    found = json.loads(podman("search", TLS, "--format", "json", term).stdout)
    assert {registry.ref(name) for name in names} <= {r["Name"] for r in found}, found
    limited = json.loads(podman("search", TLS, "--limit", "1", "--format", "json", term).stdout)
    assert len(limited) == 1, limited

    listing = podman("search", TLS, "--list-tags", "--format", "json", registry.ref(names[0]))
    assert [(r["Name"], sorted(r["Tags"])) for r in json.loads(listing.stdout)] == [
        (registry.ref(names[0]), ["v1", "v2"])
    ], listing.stdout
