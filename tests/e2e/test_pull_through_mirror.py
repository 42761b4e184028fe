"""dockerd (`registry-mirrors`), containerd (`hosts.toml`) and skopeo (`registries.conf`)
pulling Docker Hub images through dockyard's mirror mode.

The upstream is distribution 2.8.2 on loopback standing in for Docker Hub:
the image is pushed to it as `library/busybox`, and dockerd, which knows
nothing of it, pulls `busybox:latest` through dockyard (whose whole registry
mirrors the upstream). There is no network here, so dockerd could not have
got the image from Docker Hub itself. Each test runs with dockyard's storage on
a directory and on S3 (a bucket of the session SeaweedFS).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.conftest import BACKENDS, backend_env, proxy_dockyard
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import UpstreamRegistry

from .clients import Skopeo
from .daemons import Containerd, DockerDaemon
from .docker_helpers import inspect, load, push, remove, run_image
from .images import ImageFactory, greeting_for
from .tools import run

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("docker-registry") is None,
                                 reason="needs docker-registry (distribution)")]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamRegistry]:
    registry = UpstreamRegistry(tmp_path / "upstream").start()
    yield registry
    registry.stop()


@pytest.fixture(params=BACKENDS)
def mirror(request: pytest.FixtureRequest, tmp_path: Path,
           upstream: UpstreamRegistry) -> Iterator[Dockyard]:
    server = proxy_dockyard(tmp_path / "mirror", [{"prefix": "", "url": upstream.url,
                                                   "tag_ttl": 0, "docker_hub": True}],
                            timeout=3, env=backend_env(request, request.param)).start()
    yield server
    server.stop()


@pytest.fixture
def mirrored_docker(tmp_path: Path, mirror: Dockyard) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(Path("/tmp") / f"dy-mirror-{tmp_path.name[-20:]}",
                          {"registry-mirrors": [mirror.url]})
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)


def test_dockerd_registry_mirror_pulls_through_dockyard_and_survives_the_upstream(
        upstream: UpstreamRegistry, mirror: Dockyard, mirrored_docker: DockerDaemon,
        images: ImageFactory) -> None:
    docker = mirrored_docker
    image = images.image("mirror-busybox")
    upstream_ref = f"127.0.0.1:{upstream.port}/library/busybox:latest"
    load(docker, images.docker_archive(image, [upstream_ref]))
    push(docker, upstream_ref)
    remove(docker, upstream_ref)

    docker.docker("pull", "busybox:latest")
    assert inspect(docker, "busybox:latest")["RootFS"]["Layers"] == image.diff_ids
    assert run_image(docker, "busybox:latest") == greeting_for("mirror-busybox")
    remove(docker, "busybox:latest")

    # The upstream is gone: the second pull is served from dockyard's cache.
    upstream.stop()
    docker.docker("pull", "busybox:latest")
    assert inspect(docker, "busybox:latest")["RootFS"]["Layers"] == image.diff_ids
    assert "serving the cached library/busybox:latest" in mirror.log_text()


def test_containerd_hosts_toml_mirror_pulls_through_dockyard(
        tmp_path: Path, upstream: UpstreamRegistry, mirror: Dockyard, containerd: Containerd,
        images: ImageFactory) -> None:
    ns = "e2e-mirror"
    image = images.image("mirror-ctr")
    upstream_ref = f"127.0.0.1:{upstream.port}/library/ctrbox:latest"
    containerd.ctr("images", "import", "--no-unpack",
                   str(images.docker_archive(image, [upstream_ref])), namespace=ns)
    containerd.ctr("images", "push", "--plain-http", upstream_ref, namespace=ns)
    containerd.ctr("images", "rm", "--sync", upstream_ref, namespace=ns)

    # containerd's registry mirror configuration: docker.io is served by dockyard.
    hosts = tmp_path / "hosts.d"
    (hosts / "docker.io").mkdir(parents=True)
    (hosts / "docker.io" / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n\n'
        f'[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n')
    ref = "docker.io/library/ctrbox:latest"
    fresh = f"{ns}-pull"
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", "native",
                   ref, namespace=fresh)
    listing = containerd.ctr("images", "ls", namespace=fresh).stdout
    assert ref in listing, listing
    content = set(containerd.ctr("content", "ls", "--quiet", namespace=fresh).stdout.split())
    assert {image.config_digest, *image.diff_ids} <= content, content

    upstream.stop()
    again = f"{ns}-again"
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", "native",
                   ref, namespace=again)
    assert ref in containerd.ctr("images", "ls", namespace=again).stdout
    assert "serving the cached library/ctrbox:latest" in mirror.log_text()


def test_skopeo_registries_conf_mirror_copies_through_dockyard(
        tmp_path: Path, upstream: UpstreamRegistry, mirror: Dockyard, skopeo: Skopeo,
        images: ImageFactory) -> None:
    image = images.image("mirror-skopeo")
    skopeo("copy", "--dest-tls-verify=false",
           f"docker-archive:{images.docker_archive(image, ['skbox:latest'])}",
           f"docker://127.0.0.1:{upstream.port}/library/skbox:latest")
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "docker.io"\n\n[[registry.mirror]]\n'
                    f'location = "{mirror.addr}"\ninsecure = true\n')
    upstream_digest = RegistryClient(upstream.url).get_manifest(
        "library/skbox", "latest", accept=DOCKER_MANIFEST).headers["Docker-Content-Digest"]
    out = tmp_path / "copied"
    run(skopeo.argv("--registries-conf", str(conf), "copy",
                    "docker://docker.io/library/skbox:latest", f"dir:{out}"),
        env=skopeo.config.env, timeout=300)
    # The manifest as the upstream has it, byte for byte.
    copied = (out / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(copied).hexdigest() == upstream_digest
    assert json.loads(copied)["config"]["digest"] == image.config_digest
    # It came through dockyard, which now holds it (there is no network to Docker Hub).
    status, _, body = RegistryClient(mirror.url).json("GET", "/v2/library/skbox/tags/list")
    assert status == 200 and body["tags"] == ["latest"]
