"""Scenario 9: containerd's ctr pulls, tags, pushes to another repository, fetches content."""

from __future__ import annotations

import re

import pytest

from .daemons import Containerd
from .images import ImageFactory
from .registries import Registry, get_manifest

pytestmark = pytest.mark.e2e


def _image_digest(containerd: Containerd, namespace: str, ref: str) -> str:
    listing = containerd.ctr("images", "ls", namespace=namespace).stdout
    for line in listing.splitlines():
        fields = line.split()
        if fields and fields[0] == ref:
            match = re.search(r"sha256:[0-9a-f]{64}", line)
            assert match, line
            return match.group(0)
    raise AssertionError(f"{ref} not in ctr images ls:\n{listing}")


def test_pull_tag_push_elsewhere_and_fetch(
    registry: Registry, containerd: Containerd, images: ImageFactory
) -> None:
    ns = "e2e-ctr"
    src = registry.ref("e2e/ctr-src", "v1")
    dst = registry.ref("e2e/ctr-dst", "v1")
    image = images.image("ctr")

    # Seed the registry with ctr itself, then forget everything locally.
    containerd.ctr(
        "images", "import", "--no-unpack", str(images.docker_archive(image, [src])), namespace=ns
    )
    containerd.ctr("images", "push", "--plain-http", src, namespace=ns)
    seeded = _image_digest(containerd, ns, src)
    containerd.ctr("images", "rm", "--sync", src, namespace=ns)
    assert containerd.ctr("content", "ls", "--quiet", namespace=ns).stdout.split() == []

    containerd.ctr("images", "pull", "--plain-http", "--snapshotter", "native", src, namespace=ns)
    assert _image_digest(containerd, ns, src) == seeded
    containerd.ctr("images", "tag", src, dst, namespace=ns)
    # The blobs carry their source repository as labels: ctr asks for a cross-repo mount.
    containerd.ctr("images", "push", "--plain-http", dst, namespace=ns)
    assert get_manifest(registry, "e2e/ctr-dst", "v1").digest == seeded

    fresh = "e2e-ctr-fetch"
    containerd.ctr("content", "fetch", "--plain-http", dst, namespace=fresh)
    fetched = set(containerd.ctr("content", "ls", "--quiet", namespace=fresh).stdout.split())
    assert {seeded, image.config_digest, *image.diff_ids} <= fetched, fetched
