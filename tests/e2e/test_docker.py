"""Scenarios 1-4: the Docker engine pushing, pulling, running and searching."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .conftest import BIG_LAYER_BYTES
from .daemons import DockerDaemon
from .docker_helpers import inspect, load, push, remove, run_image
from .images import Image, ImageFactory, greeting_for
from .registries import Registry, get_manifest
from .tools import ON_BOTH_BACKENDS

pytestmark = pytest.mark.e2e


@ON_BOTH_BACKENDS
def test_push_pull_by_tag_and_digest_then_run(
    registry: Registry, docker: DockerDaemon, images: ImageFactory
) -> None:
    repo = "e2e/docker-basic"
    ref = registry.ref(repo, "v1")
    image = images.image("docker-basic")
    load(docker, images.docker_archive(image, [ref]))

    pushed = push(docker, ref)
    assert len(pushed.layers) == len(image.layers), pushed.output
    remove(docker, ref)

    docker.docker("pull", ref)
    by_tag = inspect(docker, ref)
    assert by_tag["RootFS"]["Layers"] == image.diff_ids
    assert registry.ref(repo, pushed.digest) in by_tag["RepoDigests"]
    remove(docker, ref)

    by_digest_ref = registry.ref(repo, pushed.digest)
    docker.docker("pull", by_digest_ref)
    assert inspect(docker, by_digest_ref)["Id"] == image.config_digest
    assert run_image(docker, by_digest_ref) == greeting_for("docker-basic")
    remove(docker, by_digest_ref)


def test_one_gib_layer_round_trip(
    registry: Registry, docker: DockerDaemon, images: ImageFactory, big_image: tuple[Image, str]
) -> None:
    image, big_sha256 = big_image
    repo = "e2e/docker-big"
    ref = registry.ref(repo, "v1")
    archive = images.docker_archive(image, [ref])
    load(docker, archive)
    archive.unlink()  # 1 GiB less on disk; the layer tar itself stays for reuse

    push(docker, ref, timeout=900)
    stored = get_manifest(registry, repo, "v1")
    assert stored.body["layers"][-1]["size"] >= BIG_LAYER_BYTES // 2, stored.body
    remove(docker, ref)

    docker.docker("pull", ref, timeout=900)
    assert inspect(docker, ref)["RootFS"]["Layers"] == image.diff_ids
    # The image's command hashes the big file inside the container.
    assert run_image(docker, ref, timeout=300).strip() == big_sha256
    remove(docker, ref)


def test_retag_push_does_not_upload_layers_again(
    registry: Registry, docker: DockerDaemon, images: ImageFactory
) -> None:
    v1 = registry.ref("e2e/docker-retag", "v1")
    v2 = registry.ref("e2e/docker-retag", "v2")
    elsewhere = registry.ref("e2e/docker-retag-other", "v1")
    image = images.image("docker-retag")
    load(docker, images.docker_archive(image, [v1]))
    first = push(docker, v1)

    docker.docker("tag", v1, v2)
    second = push(docker, v2)
    assert second.digest == first.digest
    # HEAD on each blob answered 200, so docker skipped every upload.
    assert len(second.layers) == len(image.layers), second.output
    assert set(second.layers.values()) == {"Layer already exists"}, second.output

    docker.docker("tag", v1, elsewhere)
    third = push(docker, elsewhere)
    assert all(
        status == "Layer already exists" or status.startswith("Mounted from")
        for status in third.layers.values()
    ), third.output

    remove(docker, v1, v2, elsewhere)
    for ref in (v1, v2, elsewhere):
        docker.docker("pull", ref)
        assert inspect(docker, ref)["Id"] == image.config_digest
    remove(docker, v1, v2, elsewhere)


def test_search_lists_repositories_and_honours_limit(
    registry: Registry, docker: DockerDaemon, images: ImageFactory
) -> None:
    names = [f"e2e/findme-{suffix}" for suffix in ("alpha", "beta", "gamma")]
    refs = [registry.ref(name, "v1") for name in names]
    load(docker, images.docker_archive(images.image("docker-search"), refs))
    for ref in refs:
        push(docker, ref)
    remove(docker, *refs)

    term = f"{registry.addr}/findme"
    found = docker.docker("search", "--no-trunc", "--format", "{{.Name}}", term).stdout.split()
    for name in names:
        assert any(line == name or line.endswith("/" + name) for line in found), found
    nothing = docker.docker(
        "search", "--format", "{{.Name}}", f"{registry.addr}/no-such-repository"
    ).stdout
    assert nothing.split() == []

    limited = docker.docker("search", "--limit", "2", "--format", "{{.Name}}", term).stdout.split()
    assert len(limited) == 2, limited


def test_search_shows_the_description_docker_build_labelled(
    registry: Registry, docker: DockerDaemon, tmp_path: Path
) -> None:
    """`docker build --label` puts the description in the image config, not in an
    annotation; `docker search` must show it all the same."""
    token = uuid.uuid4().hex[:10]
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text(f"hello {token}\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    description = f"Labelled by docker build {token}"
    ref = registry.ref(f"e2e/labelled-{token}", "v1")
    docker.docker("build", "--label", f"org.opencontainers.image.description={description}",
                  "--label", "org.opencontainers.image.title=Labelled", "-t", ref, str(context))
    push(docker, ref)
    remove(docker, ref)
    found = docker.docker("search", "--no-trunc", "--format", "{{.Name}}|{{.Description}}",
                          f"{registry.addr}/labelled-{token}").stdout.splitlines()
    assert any(line.endswith(f"e2e/labelled-{token}|{description}") for line in found), found
