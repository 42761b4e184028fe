"""Fixtures of the protocol tests: every request goes through the router on the
session's real `dockyard serve`, each test in repositories of its own.

The session registry runs once per storage backend: every test that uses it (through
`dockyard`, `client` or `pusher`) runs on the filesystem backend and again on the S3
backend, on a real SeaweedFS (tests/support/seaweedfs.py). A test about the filesystem
itself (files on disk, the router's direct reads) is marked `filesystem_only`.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, unique_repo
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

BACKENDS = ("filesystem", "s3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "filesystem_only: runs on the filesystem backend only, since it looks at "
        "files on disk or at what only a shared filesystem allows")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dockyard" not in metafunc.fixturenames:
        return
    only_fs = metafunc.definition.get_closest_marker("filesystem_only") is not None
    metafunc.parametrize("dockyard", ["filesystem"] if only_fs else list(BACKENDS),
                         indirect=True, scope="session")


@pytest.fixture(scope="session")
def dockyard(request: pytest.FixtureRequest) -> Dockyard:
    """The session registry on the backend of this parameter: the session's
    `filesystem_dockyard` or `s3_dockyard` (tests/conftest.py), shared with other suites."""
    return request.getfixturevalue(f"{request.param}_dockyard")


@pytest.fixture(scope="session")
def client(dockyard: Dockyard) -> RegistryClient:
    """The session client of this backend's registry. Defined here, not only in
    tests/conftest.py: a suite that ran first (access, e2e) has cached the root
    `client` of the unparametrized registry, which pytest would hand to every
    backend's tests of this directory."""
    return RegistryClient(dockyard.url)


@pytest.fixture
def repo() -> str:
    return unique_repo()


@pytest.fixture
def other_repo() -> str:
    return unique_repo()


class Pusher:
    """Builds and pushes small images, so tests read as the protocol steps they check."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def config_blob(self, name: str, media_type: str = OCI_CONFIG) -> dict:
        data = json.dumps({"architecture": "amd64", "os": "linux",
                           "nonce": os.urandom(8).hex()}).encode()
        return {"mediaType": media_type, "digest": self.client.push_blob(name, data),
                "size": len(data)}

    def layer(self, name: str, media_type: str = OCI_LAYER, size: int = 128) -> dict:
        data = os.urandom(size)
        return {"mediaType": media_type, "digest": self.client.push_blob(name, data),
                "size": len(data)}

    def image(self, name: str, *, media_type: str = OCI_MANIFEST, config_type: str = OCI_CONFIG,
              layer_type: str = OCI_LAYER, **fields: object) -> bytes:
        doc = {"schemaVersion": 2, "mediaType": media_type,
               "config": self.config_blob(name, config_type),
               "layers": [self.layer(name, layer_type)], **fields}
        return json.dumps(doc).encode()

    def push(self, name: str, reference: str, body: bytes,
             media_type: str = OCI_MANIFEST) -> tuple[str, bytes]:
        r = self.client.put_manifest(name, reference, body, media_type)
        assert r.status == 201, (r.status, r.data)
        return r.headers["Docker-Content-Digest"], body


@pytest.fixture(scope="session")
def pusher(client: RegistryClient) -> Pusher:
    return Pusher(client)
