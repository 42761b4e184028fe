"""Forwarding one request to a backend pool and streaming the answer back.

Bodies are never held whole: the request body goes out of waitress's buffer
in 1 MiB writes and the response comes back in 1 MiB reads. Status, headers
and HEAD semantics are the backend's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from waitress.buffers import ReadOnlyFileBasedBuffer

from services.router.backends import Pool
from services.router.response_cache import Answer, Capture, replayable
from services.router.shared_disk import SharedDisk
from services.router.store_fetch import StoreFetch
from shared import errors
from shared.auth.identity import ENVIRON_KEY as IDENTITY_ENVIRON
from shared.auth.identity import IDENTITY_HEADER
from shared.events import CACHE_WANTED_HEADER, CACHEABLE_HEADER
from shared.http_client import ConnectFailed, RequestFailed, Response
from shared.server import PieceBuffers
from shared.shared_disk_headers import ACCEL_FILE, ACCEL_REQUEST, FETCH_URL

log = logging.getLogger("dockyard.router.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Answered by the router's own server already; a backend must not send 100 Continue.
NOT_FORWARDED = HOP_BY_HOP | {"expect", "content-length", "content-type",
                              # Credentials stay at the router, which checked them.
                              "authorization"}
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

READ_SIZE = 1024 * 1024
# Requests that may be sent again after a failure that happened mid-request.
RETRYABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _upstream_headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            # Internal headers never come from a client.
            if name.lower() not in NOT_FORWARDED and not name.lower().startswith("x-dockyard-"):
                headers[name] = value
    identity = environ.get(IDENTITY_ENVIRON)
    if identity is not None:
        # Who the router authenticated ("" for anonymous); see shared.auth.identity.
        headers[IDENTITY_HEADER] = identity.header_value()
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    headers["Content-Length"] = environ.get("CONTENT_LENGTH") or "0"
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    headers.setdefault("X-Forwarded-Host", host)
    headers.setdefault("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http"))
    client = environ.get("REMOTE_ADDR", "")
    previous = environ.get("HTTP_X_FORWARDED_FOR")
    headers["X-Forwarded-For"] = f"{previous}, {client}" if previous else client
    return headers


# Buffers the bodies of blob answers are relayed through (`shared.server.PieceBuffers`).
_BUFFERS = PieceBuffers(READ_SIZE)


class _Body:
    """The response body iterable; closing it returns or drops the backend connection.

    Under waitress the body is read into reused buffers that waitress sends from
    (`shared.server.MemoryPiece`); elsewhere (a test client) it is plain bytes.
    """

    def __init__(self, resp: Response, environ: dict[str, Any]) -> None:
        self._resp = resp
        self._pieces = environ.get("wsgi.file_wrapper") is ReadOnlyFileBasedBuffer

    def __iter__(self) -> Iterator[Any]:
        if self._pieces:
            yield from _BUFFERS.pieces(functools.partial(self._resp.readinto, some=True))
        else:
            yield from self._resp.stream(READ_SIZE)

    def close(self) -> None:
        # Unread bytes (the client went away mid-body) make the connection
        # unusable; release() keeps it only when the body was read to the end.
        self._resp.release()


def forward(pool: Pool, environ: dict[str, Any], start_response: Callable[..., Any],
            retry_after: int, disk: SharedDisk | None = None,
            capture: Capture | None = None, as_get: bool = False,
            store: StoreFetch | None = None) -> Any:
    """Forward the request to `pool` and stream its answer back.

    With `capture`, an answer the service marked cacheable is read whole and
    handed to it too; `as_get` asks for a HEAD's answer with a GET, so that
    there is a body to capture. With `disk` or `store`, a blob GET may be
    answered with a file of the shared disk or an object of the object store,
    which the router then sends itself.
    """
    head = environ["REQUEST_METHOD"] == "HEAD"
    method = "GET" if as_get else environ["REQUEST_METHOD"]
    path = quote(environ.get("PATH_INFO", ""), safe="/:@+=,;~-._")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    headers = _upstream_headers(environ)
    if capture is not None:
        headers[CACHE_WANTED_HEADER] = "1"
    length = int(headers["Content-Length"] or 0)
    body = environ["wsgi.input"] if length else None
    if store is not None and not store.available():
        store = None
    if (disk is not None or store is not None) and "/blobs/" in path:
        if method == "GET" and "/blobs/uploads/" not in path:
            headers[ACCEL_REQUEST] = ", ".join(
                ["file"] * (disk is not None) + ["url"] * (store is not None))
        elif (disk is not None and body is not None and "/blobs/uploads/" in path
              and disk.hand_over(body, headers)):
            body = None
    start_pos = body.tell() if body is not None and hasattr(body, "tell") else None

    resp = None
    order = pool.order()
    if method in RETRYABLE_METHODS:
        # One more try on a fresh connection: a pooled keep-alive connection
        # may have been closed by a backend that restarted.
        order = order + order[:1]
    for backend in order:
        try:
            resp = backend.pool.request(method, path, list(headers.items()), body)
            break
        except ConnectFailed as e:
            backend.mark_down()
            log.debug("connect to %s failed: %s", backend.url, e)
        except RequestFailed as e:
            log.warning("%s %s to %s failed: %s", method, path, backend.url, e)
            backend.mark_down()
            if method not in RETRYABLE_METHODS:
                break
        if body is not None:
            if start_pos is None:
                break
            body.seek(start_pos)
    if resp is None:
        err = errors.Unavailable(f"no {pool.name} backend is available",
                                 retry_after=retry_after)
        payload = errors.render(err)
        start_response("503 Service Unavailable", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("Retry-After", str(retry_after)), API_VERSION,
        ])
        return [] if head else [payload]

    accel_file = resp.header(ACCEL_FILE) if disk is not None else None
    opened = disk.open_blob(resp) if disk is not None and accel_file else None
    fetch_url = resp.header(FETCH_URL) if store is not None else None
    fetched = store.open(resp) if store is not None and fetch_url else None
    if (accel_file and opened is None) or (fetch_url and fetched is None):
        # The file vanished or is not ours, or the store did not answer as asked:
        # ask again for the bytes themselves.
        resp.read()
        resp.release()
        return forward(pool, environ, start_response, retry_after, None, capture, as_get)
    out_headers = [(k, v) for k, v in resp.headers
                   if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-dockyard-")]
    handed = opened or fetched
    if handed is not None:
        out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
        out_headers.append(("Content-Length", str(handed[1])))
    out_headers.append(API_VERSION)
    status = f"{resp.status} {resp.reason or ''}".strip()
    if handed is not None:
        start_response(status, out_headers)
        resp.read()
        resp.release()
        if fetched is not None:
            return _Body(fetched[0], environ)
        return environ["wsgi.file_wrapper"](handed[0], READ_SIZE)
    cacheable = (capture is not None and resp.status == 200
                 and resp.header(CACHEABLE_HEADER) is not None)
    if as_get or cacheable:
        # Small by construction: a manifest, a listing page or a search answer.
        body = resp.read()
        resp.release()
        if cacheable:
            assert capture is not None
            capture(Answer(status, replayable(out_headers), body))
        start_response(status, out_headers)
        return [] if head else [body]
    start_response(status, out_headers)
    return _Body(resp, environ)
