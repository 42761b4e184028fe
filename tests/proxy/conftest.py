"""Fixtures of the pull-through cache tests: a real distribution upstream, a counting
front in front of it, and a `dockyard serve` configured to mirror it, once on each
storage backend: a directory, and a bucket of the session SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.integration.helpers import stored_blob
from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Front, Pusher, UpstreamRegistry

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="needs docker-registry (distribution)")

TAG_TTL = 2.0
BACKENDS = ["filesystem", "s3"]


def proxy_dockyard(directory: Path, upstreams: list[dict[str, Any]],
                   timeout: float = 5.0, env: dict[str, str] | None = None) -> Dockyard:
    """A dockyard mirroring `upstreams`; `env` picks its backend (`backend_env`)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "dockyard.yml"
    config.write_text(json.dumps({"proxy": {"upstreams": upstreams, "timeout": timeout}}))
    return Dockyard(directory / "data", config=config, env=dict(env or {}))


def backend_env(request: pytest.FixtureRequest, backend: str) -> dict[str, str]:
    return seaweed.backend_env(request, backend, "proxy")


def pull_sha256(url: str) -> tuple[str, str]:
    """GET a blob on a connection of its own, read to the end: its sha256 (hex) and
    its Cache-Status."""
    http = urllib3.PoolManager(retries=False, timeout=120)
    r = http.request("GET", url, preload_content=False)
    assert r.status == 200, r.status
    h = hashlib.sha256()
    for chunk in r.stream(1024 * 1024):
        h.update(chunk)
    return h.hexdigest(), r.headers["Cache-Status"]


def stored_soon(d: Dockyard, digest: str, timeout: float = 20.0) -> bytes:
    """The blob's stored bytes, on whichever backend, waiting up to `timeout` for them."""
    deadline = time.monotonic() + timeout
    while (data := stored_blob(d, digest)) is None:
        assert time.monotonic() < deadline, f"{digest} was never stored"
        time.sleep(0.1)
    return data


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a test's own dockyard, on each backend in turn."""
    return backend_env(request, request.param)


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


@pytest.fixture(scope="module", params=BACKENDS)
def mirror(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           front: Front) -> Iterator[Dockyard]:
    """dockyard with `up/*` mirroring the upstream through the counting front."""
    server = proxy_dockyard(tmp_path_factory.mktemp("mirror"), [
        {"prefix": "up", "url": front.url, "tag_ttl": TAG_TTL},
    ], env=backend_env(request, request.param)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(mirror: Dockyard) -> RegistryClient:
    return RegistryClient(mirror.url)


@pytest.fixture(scope="module")
def pusher(upstream: UpstreamRegistry) -> Pusher:
    return Pusher(upstream.url)
