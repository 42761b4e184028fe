"""Fixtures that start real processes: `dockyard serve` and redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Dockyard, RedisServer
from tests.support.registry_client import RegistryClient


@pytest.fixture(scope="session")
def dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """One `dockyard serve` for the session, on a free port with a fresh data directory."""
    server = Dockyard(tmp_path_factory.mktemp("dockyard") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
