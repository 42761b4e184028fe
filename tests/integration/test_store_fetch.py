"""The router fetching blobs from the object store itself (services/router/store_fetch.py).

On S3, a blob GET through the router is answered by storage with a presigned URL
of the object in an internal header, and the router relays the range from the
store. These tests check that storage offers it only to a router that asks and
only for GET; that a client sees plain 200/206 answers with the right headers
and never an internal header, whatever it sends; that access control still
decides first; and that whenever the store does not answer as asked the router
falls back to storage's bytes before the client has seen anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
import yaml
from waitress.server import create_server

from services.router import store_fetch
from services.router.backends import Pool
from services.router.proxy import forward
from services.router.store_fetch import StoreFetch
from shared.shared_disk_headers import ACCEL_LENGTH, ACCEL_OFFSET, ACCEL_REQUEST, FETCH_URL
from tests.integration.helpers import direct, service_url
from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.secured import GROUPS, PASSWORDS, RULES, AuthClient, basic, write_htpasswd

# -- storage and the router on a real SeaweedFS ------------------------------------------


def test_storage_names_the_object_only_for_a_router_that_asks(s3_dockyard: Dockyard) -> None:
    client = RegistryClient(s3_dockyard.url)
    data = os.urandom(200_000)
    digest = client.push_blob("fetch/named", data)
    url = service_url(s3_dockyard, "storage") + f"/v2/fetch/named/blobs/{digest}"
    key = s3_dockyard.service_key()

    r = direct("GET", url, signer=key, headers={ACCEL_REQUEST: "url", "Range": "bytes=100-299"})
    assert r.status == 206 and r.data == b""
    assert r.headers["Content-Range"] == f"bytes 100-299/{len(data)}"
    assert (r.headers[ACCEL_OFFSET], r.headers[ACCEL_LENGTH]) == ("100", "200")
    store = urllib3.PoolManager(retries=False)
    fetched = store.request("GET", r.headers[FETCH_URL], headers={"Range": "bytes=100-299"})
    assert fetched.status == 206 and fetched.data == data[100:300]

    # Asked for the file of a shared disk only, or nothing: the bytes, as before.
    for headers in ({ACCEL_REQUEST: "file"}, {}):
        r = direct("GET", url, signer=key, headers=headers)
        assert r.status == 200 and r.data == data and FETCH_URL not in r.headers
    # HEAD: the headers only, never a URL.
    r = direct("HEAD", url, signer=key, headers={ACCEL_REQUEST: "url"})
    assert r.status == 200 and FETCH_URL not in r.headers
    assert r.headers["Content-Length"] == str(len(data))


def test_pulls_through_the_router_are_plain_answers(s3_dockyard: Dockyard) -> None:
    client = RegistryClient(s3_dockyard.url)
    # Larger than one read of the router's buffers, and than a 5 MiB part.
    data = os.urandom(6 * 1024 * 1024 + 3)
    digest = client.push_blob("fetch/plain", data)
    path = f"/v2/fetch/plain/blobs/{digest}"
    cases = [({}, 200, data),
             ({"Range": "bytes=0-0"}, 206, data[:1]),
             ({"Range": "bytes=1048570-2097160"}, 206, data[1048570:2097161]),
             ({"Range": f"bytes={len(data) - 10}-"}, 206, data[-10:]),
             # What a client sends of the internal headers is dropped.
             ({ACCEL_REQUEST: "url", FETCH_URL: "http://127.0.0.1:9/x"}, 200, data)]
    for headers, status, body in cases:
        r = client.request("GET", path, headers=headers)
        assert r.status == status, (headers, r.status, r.data[:200])
        assert r.data == body
        assert r.headers["Content-Length"] == str(len(body))
        assert r.headers["Docker-Content-Digest"] == digest
        assert not [k for k in r.headers if k.lower().startswith("x-dockyard-")], r.headers
    assert hashlib.sha256(client.request("GET", path).data).hexdigest() == digest[7:]
    head = client.request("HEAD", path)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
    # An empty blob has no range to fetch: storage answers it itself.
    empty = client.push_blob("fetch/plain", b"")
    r = client.request("GET", f"/v2/fetch/plain/blobs/{empty}")
    assert r.status == 200 and r.data == b""
    # A repository that may not serve the blob: 404, nothing fetched.
    assert client.request("GET", f"/v2/fetch/other/blobs/{digest}").status == 404


@pytest.fixture(scope="module")
def secured_s3(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """dockyard with access control (tests/support/secured.py's users) on S3."""
    if not seaweed.backend_available():
        pytest.skip(seaweed.NO_BACKEND)
    weed = request.getfixturevalue("seaweedfs")
    directory = tmp_path_factory.mktemp("secured-s3")
    write_htpasswd(directory / "htpasswd", PASSWORDS)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump({
        "auth": {"htpasswd": str(directory / "htpasswd"), "groups": GROUPS,
                 "failed_login_limit": 1000},
        "access": RULES}))
    env = seaweed.dockyard_env(weed.access, seaweed.new_bucket_name("secured"))
    server = Dockyard(directory / "data", config=config, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def test_access_control_decides_before_any_fetch(secured_s3: Dockyard) -> None:
    alice = AuthClient(secured_s3.url, basic("alice"))
    data = os.urandom(100_000)
    digest = alice.push_blob("team-a/app", data)
    path = f"/v2/team-a/app/blobs/{digest}"
    for who in (None, "reader", "mallory"):
        r = AuthClient(secured_s3.url, basic(who) if who else None).request(
            "GET", path, headers={"Range": "bytes=0-9"})
        assert r.status in (401, 403), (who, r.status)
        assert data[:10] not in r.data
        assert not [k for k in r.headers if k.lower().startswith("x-dockyard-")]
    r = alice.request("GET", path, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.data == data[10:20]
    assert alice.request("GET", path).data == data


# -- the router's fallbacks, against a stand-in storage and store ----------------------


DATA = bytes(range(256)) * 1000


def _serve(app: Callable[..., Any]) -> Iterator[str]:
    server = create_server(app, host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()


@pytest.fixture(scope="module")
def store() -> Iterator[str]:
    """An object store whose /ok answers ranges, /forbidden 403, /whole the whole object."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path == "/forbidden":
            start_response("403 Forbidden", [("Content-Length", "0")])
            return []
        if path == "/whole":
            start_response("200 OK", [("Content-Length", str(len(DATA)))])
            return [DATA]
        first, last = map(int, environ["HTTP_RANGE"][len("bytes="):].split("-"))
        body = DATA[first:last + 1]
        start_response("206 Partial Content", [
            ("Content-Length", str(len(body))),
            ("Content-Range", f"bytes {first}-{last}/{len(DATA)}")])
        return [body]

    yield from _serve(app)


@pytest.fixture(scope="module")
def storage(store: str) -> Iterator[tuple[str, list[str]]]:
    """Storage that names `store` + the path given in ?at=, or sends the bytes itself."""
    asked: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        accel = environ.get("HTTP_X_DOCKYARD_ACCEL", "")
        asked.append(accel)
        headers = [("Docker-Content-Digest", "sha256:x")]
        first, last = 0, len(DATA) - 1
        status = "200 OK"
        if "HTTP_RANGE" in environ:
            first, last = map(int, environ["HTTP_RANGE"][len("bytes="):].split("-"))
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {first}-{last}/{len(DATA)}"))
        if "url" in accel:
            at = environ["QUERY_STRING"].partition("at=")[2]
            where = at if "://" in at else store + at
            start_response(status, [*headers, ("Content-Length", "0"), (FETCH_URL, where),
                                    (ACCEL_OFFSET, str(first)),
                                    (ACCEL_LENGTH, str(last - first + 1))])
            return []
        start_response(status, [*headers, ("Content-Length", str(last - first + 1))])
        return [DATA[first:last + 1]]

    for url in _serve(app):
        yield url, asked


def _get(storage_url: str, fetch: StoreFetch, at: str,
         headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:
    pool = Pool("storage", [storage_url], 5.0, 4, interval=0, health_interval=0)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/r/blobs/sha256:x",
               "QUERY_STRING": f"at={at}", "SERVER_NAME": "t", "SERVER_PORT": "5000",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()}}
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = forward(pool, environ, start_response, 2, store=fetch)
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return answer["status"], answer["headers"], data


def test_the_router_relays_the_store_or_falls_back_to_storage(
        storage: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, asked = storage
    fetch = StoreFetch(5.0, 4)
    # Fetched from the store: the range, under storage's status and headers.
    status, headers, data = _get(url, fetch, "/ok", {"Range": "bytes=5-1004"})
    assert status.startswith("206") and data == DATA[5:1005]
    assert headers["Content-Length"] == "1000"
    assert headers["Content-Range"] == f"bytes 5-1004/{len(DATA)}"
    assert not [k for k in headers if k.lower().startswith("x-dockyard-")]
    assert asked[-1] == "url"
    # A whole object answered with 200 is the same bytes.
    assert _get(url, fetch, "/whole")[2] == DATA
    # Refused (an expired URL), a URL of another scheme: storage's bytes instead.
    for at in ("/forbidden", "file:///etc/passwd", "http://127.0.0.1:x/"):
        asked.clear()
        status, headers, data = _get(url, fetch, at)
        assert status.startswith("200") and data == DATA, at
        assert asked == ["url", ""]
    # A store this router cannot reach: storage's bytes, and no more offers for a while.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/object"  # nothing listens
    monkeypatch.setattr(store_fetch, "RETRY_SECONDS", 0.5)
    asked.clear()
    assert _get(url, fetch, dead)[2] == DATA
    assert asked == ["url", ""]
    assert not fetch.available()
    asked.clear()
    assert _get(url, fetch, dead)[2] == DATA
    assert asked == [""]
    time.sleep(0.6)
    asked.clear()
    assert fetch.available() and _get(url, fetch, "/ok")[2] == DATA
    assert asked == ["url"]


def test_https_store_connections_verify_as_configured() -> None:
    # Only the context is built here: the handshake is ssl's.
    import ssl

    strict = StoreFetch(5.0, 4)._context()
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    lax = StoreFetch(5.0, 4, verify_tls=False)._context()
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname
