"""Fixtures of the pull-through cache tests: a real distribution upstream, a counting
front in front of it, and a `dockyard serve` configured to mirror it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Front, Pusher, UpstreamRegistry

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="needs docker-registry (distribution)")

TAG_TTL = 2.0


def proxy_dockyard(directory: Path, upstreams: list[dict[str, Any]],
                   timeout: float = 5.0) -> Dockyard:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "dockyard.yml"
    config.write_text(json.dumps({"proxy": {"upstreams": upstreams, "timeout": timeout}}))
    return Dockyard(directory / "data", config=config)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamRegistry]:
    registry = UpstreamRegistry(tmp_path_factory.mktemp("upstream")).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def front(upstream: UpstreamRegistry) -> Iterator[Front]:
    proxy = Front(upstream.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, front: Front) -> Iterator[Dockyard]:
    """dockyard with `up/*` mirroring the upstream through the counting front."""
    server = proxy_dockyard(tmp_path_factory.mktemp("mirror"), [
        {"prefix": "up", "url": front.url, "tag_ttl": TAG_TTL},
    ]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(mirror: Dockyard) -> RegistryClient:
    return RegistryClient(mirror.url)


@pytest.fixture(scope="module")
def pusher(upstream: UpstreamRegistry) -> Pusher:
    return Pusher(upstream.url)
