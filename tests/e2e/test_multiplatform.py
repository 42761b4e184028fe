"""Scenario 8: a two-platform image index pushed by skopeo, pulled per platform by docker."""

from __future__ import annotations

import pytest

from .clients import Skopeo
from .daemons import DockerDaemon
from .docker_helpers import inspect, remove, run_image
from .images import ImageFactory, greeting_for
from .registries import OCI_INDEX, Registry, get_manifest

pytestmark = pytest.mark.e2e


def test_image_index_pull_each_platform(
    registry: Registry, skopeo: Skopeo, docker: DockerDaemon, images: ImageFactory
) -> None:
    amd64 = images.image("multiarch")
    arm64 = images.foreign_image("multiarch", "arm64", "v8")
    layout = images.oci_layout("multiarch")
    index = layout.add_index([(amd64, layout.add_image(amd64)), (arm64, layout.add_image(arm64))])
    layout.tag(index, "v1")
    ref = registry.ref("e2e/multiarch", "v1")

    skopeo("copy", "--all", "--dest-tls-verify=false", layout.ref("v1"), f"docker://{ref}")
    stored = get_manifest(registry, "e2e/multiarch", "v1")
    assert stored.body["mediaType"] == OCI_INDEX
    assert stored.digest == index.digest
    assert stored.content_type.startswith(OCI_INDEX)

    docker.docker("pull", "--platform", "linux/amd64", ref)
    pulled = inspect(docker, ref)
    assert (pulled["Architecture"], pulled["Id"]) == ("amd64", amd64.config_digest)
    assert run_image(docker, ref) == greeting_for("multiarch")

    docker.docker("pull", "--platform", "linux/arm64", ref)
    pulled = inspect(docker, ref)
    assert (pulled["Architecture"], pulled["Id"]) == ("arm64", arm64.config_digest)
    remove(docker, amd64.config_digest, arm64.config_digest)
