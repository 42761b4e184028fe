"""Fixtures of the fault tests: dockyards with small limits, shared where the tests
only read, so the suite pays for as few process start-ups as possible."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard

# One dockyard with every limit small enough to hit cheaply. The environment is
# inherited by all four children, so each service applies the same limits.
IDLE_TIMEOUT = 2
MAX_HEADER_SIZE = 4096
MANIFEST_MAX_SIZE = 2048
MAX_UPLOADS_PER_REPOSITORY = 4
LIMITED_ENV = {
    "DOCKYARD_HTTP_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    "DOCKYARD_HTTP_MAX_HEADER_SIZE": str(MAX_HEADER_SIZE),
    "DOCKYARD_STORAGE_MANIFEST_MAX_SIZE": str(MANIFEST_MAX_SIZE),
    "DOCKYARD_STORAGE_MAX_UPLOADS_PER_REPOSITORY": str(MAX_UPLOADS_PER_REPOSITORY),
    # Short waits for a backend that stopped answering, so 503 tests finish quickly.
    "DOCKYARD_ROUTER_BACKEND_TIMEOUT": "2",
    "DOCKYARD_STORAGE_RPC_TIMEOUT": "1",
}


@pytest.fixture(scope="session")
def limited_dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    with Dockyard(tmp_path_factory.mktemp("limited") / "data", env=dict(LIMITED_ENV)) as server:
        yield server


@pytest.fixture(scope="module")
def module_dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """A default dockyard of the module's own, whose storage root only that module writes."""
    with Dockyard(tmp_path_factory.mktemp("module") / "data") as server:
        yield server


# The S3 fault tests: small parts so that a few MiB cross part boundaries, and a short
# timeout per S3 call so that a dead object store is answered quickly.
S3_PART_SIZE = seaweed.MIN_PART_SIZE
S3_TIMEOUT = 3


@pytest.fixture
def s3_dockyard_on(fresh_dockyard: Dockyard) -> Callable[..., Dockyard]:
    """Starts the test's own `dockyard serve` on the S3 backend of a given SeaweedFS
    (`.access`), in a fresh bucket that dockyard creates; `s3` sets other storage.s3 keys."""
    if not seaweed.backend_available():
        pytest.skip(seaweed.NO_BACKEND)

    def start(access: seaweed.S3Access, **s3: Any) -> Dockyard:
        settings = {"part_size": S3_PART_SIZE, "timeout": S3_TIMEOUT, **s3}
        fresh_dockyard.env.update(
            seaweed.dockyard_env(access, seaweed.new_bucket_name("fault"), **settings))
        return fresh_dockyard.start()

    return start
