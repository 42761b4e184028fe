"""The Docker engine pushing again what a garbage collection deleted (distribution
#1803, #3743, #4569: the push said "Layer already exists" and the image could not
be pulled)."""

from __future__ import annotations

import json
import subprocess

import pytest
import urllib3

from tests.support.processes import VENV_BIN

from .daemons import DockerDaemon
from .docker_helpers import load, push, remove, run_image
from .images import ImageFactory, greeting_for
from .registries import Registry

pytestmark = pytest.mark.e2e


def test_push_after_gc_uploads_again_and_pulls(
    registry: Registry, docker: DockerDaemon, images: ImageFactory
) -> None:
    if registry.kind != "dockyard":
        pytest.skip("`dockyard gc` collects dockyard's storage")
    repo = "e2e/docker-gc"
    ref = registry.ref(repo, "v1")
    image = images.image("docker-gc", own_tool_layer=True)
    archive = images.docker_archive(image, [ref])
    load(docker, archive)
    first = push(docker, ref)
    assert set(first.layers.values()) == {"Pushed"}, first.output

    http = urllib3.PoolManager(retries=False)
    r = http.request("DELETE", f"{registry.url}/v2/{repo}/manifests/{first.digest}")
    assert r.status == 202, (r.status, r.data)
    # No grace: only what no manifest names goes, which is this image now.
    out = subprocess.run([str(VENV_BIN / "dockyard"), "gc", "--data-dir",
                          str(registry.data_dir), "--grace", "0", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    deleted = {i["name"] for i in json.loads(out.stdout)["items"] if i["kind"] == "blob"}
    assert first.digest in deleted and len(deleted) >= 1 + len(first.layers)

    # The engine remembers having pushed these layers; the registry must not.
    again = push(docker, ref)
    assert set(again.layers.values()) == {"Pushed"}, again.output
    assert again.digest == first.digest
    remove(docker, ref)
    docker.docker("pull", ref)
    assert run_image(docker, ref) == greeting_for("docker-gc")
    remove(docker, ref)
