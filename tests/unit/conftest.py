"""In-process services for the unit tests: each app is the real one from
`create_app`, called through falcon's TestClient; the index the storage app talks
to is served by waitress on a loopback thread, backed by the session's redis-server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from waitress.server import create_server

from services.index.app import create_app as create_index_app
from services.storage.app import create_app as create_storage_app
from shared import config
from shared.service_auth import ServiceKey
from tests.support.processes import RedisServer, free_port

# The services' shared secret in these tests (shared/service_auth.py).
TEST_SECRET = "unit-test-internal-secret-0123456789"
TEST_KEY = ServiceKey(TEST_SECRET)


def make_config(**env: str) -> dict[str, Any]:
    """The effective configuration for these overrides, exactly as a service would load it."""
    return config.load(None, environ={"DOCKYARD_LOG_ACCESS": "false",
                                      "DOCKYARD_INTERNAL_SECRET": TEST_SECRET, **env})


class Api:
    """A TestClient whose paths may carry a query string, like a real client's URLs.

    Requests are signed as dockyard's router signs them (`signer=None`: unsigned).
    """

    def __init__(self, app: Any, signer: ServiceKey | None = TEST_KEY) -> None:
        self.client = falcon.testing.TestClient(app)
        self.signer = signer

    def __call__(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> falcon.testing.Result:
        headers = dict(headers or {})
        if self.signer is not None:
            headers["X-Dockyard-Signature"] = self.signer.sign(method, path, headers.items(),
                                                               body)
        path, _, query = path.partition("?")
        return self.client.simulate_request(method, path, query_string=query or None,
                                            body=body, headers=headers)


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of the test's own: the session's redis-server is shared."""
    return f"unit-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def index_config(redis_server: RedisServer, prefix: str) -> dict[str, Any]:
    return make_config(DOCKYARD_INDEX_REDIS_URL=redis_server.url,
                       DOCKYARD_INDEX_REDIS_KEY_PREFIX=prefix,
                       DOCKYARD_INDEX_SEARCH_REFRESH="0")


@pytest.fixture
def index_api(index_config: dict[str, Any]) -> Api:
    return Api(create_index_app(index_config))


@pytest.fixture
def index_url(index_config: dict[str, Any]) -> Iterator[str]:
    """The real index app on a loopback port, so storage reaches it with its real RPC client."""
    server = create_server(create_index_app(index_config), host="127.0.0.1", port=0,
                           threads=4, ident="test-index", asyncore_loop_timeout=0.05)
    stopping = threading.Event()

    def run() -> None:
        try:
            server.run()
        except Exception:
            # Closing sockets under a polling loop makes it fail; that is the stop.
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=run, name="test-index", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stopping.set()
        server.close()
        # waitress keeps polling while keep-alive connections remain; close them too
        # so the loop ends and no thread outlives the test.
        for channel in list(server._map.values()):
            channel.close()
        thread.join(5)


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def storage_config(root: Path, index_url: str, **env: str) -> dict[str, Any]:
    return make_config(DOCKYARD_STORAGE_ROOT=str(root), DOCKYARD_STORAGE_INDEX_URLS=index_url,
                       DOCKYARD_STORAGE_RPC_TIMEOUT="2", **env)


@pytest.fixture
def storage_api(storage_root: Path, index_url: str) -> Api:
    return Api(create_storage_app(storage_config(storage_root, index_url)))


@pytest.fixture
def dead_url() -> str:
    """An address nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"
