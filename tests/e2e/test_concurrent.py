"""Scenario 11: docker pushes one image while skopeo pulls another from the same registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .clients import Skopeo
from .daemons import DockerDaemon
from .docker_helpers import inspect, load, parse_push, remove
from .images import ImageFactory
from .registries import Registry

pytestmark = pytest.mark.e2e

MAX_PULLS = 5
PUSH_TIMEOUT = 600.0


def _pulled_config_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    return str(manifest["config"]["digest"])


def test_docker_push_while_skopeo_pulls(
    registry: Registry,
    docker: DockerDaemon,
    skopeo: Skopeo,
    images: ImageFactory,
    e2e_root: Path,
) -> None:
    pulled_image = images.image("concurrent-pulled", random_bytes=64 << 20)
    layout = images.oci_layout("concurrent-pulled")
    layout.tag(layout.add_image(pulled_image), "v1")
    pulled_ref = f"docker://{registry.ref('e2e/concurrent-pulled', 'v1')}"
    skopeo("copy", "--dest-tls-verify=false", layout.ref("v1"), pulled_ref)

    pushed_image = images.image("concurrent-pushed", random_bytes=128 << 20)
    pushed_ref = registry.ref("e2e/concurrent-pushed", "v1")
    load(docker, images.docker_archive(pushed_image, [pushed_ref]))

    work = e2e_root / "concurrent"
    work.mkdir()
    push_log = work / "push.log"
    with push_log.open("wb") as log:
        push = subprocess.Popen(
            ["docker", "push", pushed_ref],
            env=docker.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pulls_during_push = 0
    try:
        deadline = time.monotonic() + PUSH_TIMEOUT
        for attempt in range(MAX_PULLS):
            dest = work / f"pull-{attempt}"
            skopeo("copy", "--src-tls-verify=false", pulled_ref, f"oci:{dest}:v1")
            assert _pulled_config_digest(dest) == pulled_image.config_digest
            if push.poll() is not None:
                break
            pulls_during_push += 1
        push.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if push.poll() is None:
            os.killpg(push.pid, signal.SIGKILL)
            push.wait(timeout=10)
    output = push_log.read_text(errors="replace")
    assert push.returncode == 0, output
    # The first pull started while the push was running; more ran if it was still going.
    print(f"skopeo pulls completed while docker push was still running: {pulls_during_push}")

    parse_push(output)
    remove(docker, pushed_ref)
    docker.docker("pull", pushed_ref)
    assert inspect(docker, pushed_ref)["RootFS"]["Layers"] == pushed_image.diff_ids
    remove(docker, pushed_ref)
