"""Fixtures that start real processes: `dockyard serve`, redis-server and SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard, RedisServer
from tests.support.registry_client import RegistryClient
from tests.support.seaweedfs import SeaweedCluster, SeaweedServer


@pytest.fixture(scope="session")
def filesystem_dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """One `dockyard serve` for the session, on a free port with a fresh data directory."""
    with Dockyard(tmp_path_factory.mktemp("dockyard") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def dockyard(filesystem_dockyard: Dockyard) -> Dockyard:
    """The session registry (tests/integration runs it once per storage backend)."""
    return filesystem_dockyard


@pytest.fixture(scope="session")
def s3_dockyard(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """One `dockyard serve` for the session with `storage.backend: s3`, in a bucket of
    its own (which dockyard creates) under a key prefix on the session SeaweedFS, with
    5 MiB parts."""
    if not seaweed.backend_available():
        pytest.skip(seaweed.NO_BACKEND)
    weed: SeaweedServer = request.getfixturevalue("seaweedfs")
    # The smallest part S3 allows, so that a few MiB already take multipart uploads.
    env = seaweed.dockyard_env(weed.access, seaweed.new_bucket_name("session"),
                               part_size=seaweed.MIN_PART_SIZE)
    with Dockyard(tmp_path_factory.mktemp("dockyard-s3") / "data", env=env) as server:
        yield server


@pytest.fixture
def fresh_dockyard(tmp_path: Path) -> Iterator[Dockyard]:
    """A `dockyard serve` of the test's own, for tests that kill or reconfigure it."""
    server = Dockyard(tmp_path / "data")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(dockyard: Dockyard) -> RegistryClient:
    return RegistryClient(dockyard.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One real SeaweedFS (`weed server -s3`) for the session; its S3 gateway at
    `seaweedfs.endpoint`, keys in `seaweedfs.access` (tests/support/seaweedfs.py)."""
    seaweed.require()
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedServer) -> Iterator[str]:
    """A fresh bucket on the session SeaweedFS, removed with its contents afterwards."""
    name = seaweedfs.access.create_bucket()
    yield name
    seaweedfs.access.delete_bucket(name)


@pytest.fixture
def seaweedfs_cluster(tmp_path: Path) -> Iterator[SeaweedCluster]:
    """SeaweedFS in distributed mode (master, two volume servers replicating each other,
    filer, S3 gateway) of the test's own, for tests that kill a volume server."""
    seaweed.require()
    cluster = SeaweedCluster(tmp_path / "seaweedfs").start()
    try:
        yield cluster
    finally:
        cluster.stop()
