"""Fixtures of the access-control tests: a `dockyard serve` with users, groups and rules.

Every request goes through the router's public port of a real `dockyard serve`.
Clients can bind to other loopback addresses (127.0.0.2 ...) to act as other
client addresses for the per-address login limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import Dockyard
from tests.support.secured import AuthClient, basic, start_secured


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    server = start_secured(tmp_path_factory.mktemp("secured"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def as_user(secured: Dockyard) -> Any:
    clients: dict[str | None, AuthClient] = {}

    def make(user: str | None) -> AuthClient:
        if user not in clients:
            clients[user] = AuthClient(secured.url, basic(user) if user else None)
        return clients[user]

    return make


@pytest.fixture(scope="session")
def admin(as_user: Any) -> AuthClient:
    return as_user("admin")


@pytest.fixture(scope="session")
def anon(as_user: Any) -> AuthClient:
    return as_user(None)
