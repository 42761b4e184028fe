"""Scenario 6: an image built by buildah from scratch, pushed, then pulled by docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .clients import Buildah
from .daemons import DockerDaemon
from .docker_helpers import remove, run_image
from .images import ImageFactory
from .registries import Registry

pytestmark = pytest.mark.e2e

MESSAGE = "built by buildah from scratch\n"


def test_build_from_scratch_push_and_docker_pull(
    registry: Registry,
    buildah: Buildah,
    docker: DockerDaemon,
    images: ImageFactory,
    e2e_root: Path,
) -> None:
    message = e2e_root / "buildah-message.txt"
    message.write_text(MESSAGE)
    local = "localhost/e2e/buildah:v1"
    ref = registry.ref("e2e/buildah", "v1")

    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("copy", container, str(images.tool), "/bin/tool")
        buildah("copy", container, str(message), "/etc/e2e/message")
        buildah(
            "config",
            "--entrypoint", json.dumps(["/bin/tool"]),
            "--cmd", json.dumps(["cat", "/etc/e2e/message"]),
            container,
        )  # fmt: skip
        buildah("commit", container, local)
    finally:
        buildah("rm", container, check=False)
    buildah("push", "--tls-verify=false", local, f"docker://{ref}")
    buildah("rmi", local)

    docker.docker("pull", ref)
    assert run_image(docker, ref) == MESSAGE
    remove(docker, ref)
