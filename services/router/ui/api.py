"""The UI's server side reads the registry through its own public API.

Each page makes its requests as WSGI calls into the router's public app, in
process: the same routing, permission checks, response cache and error codes
as any client's request, without a socket or a second waitress thread (a
page holding one thread while waiting for another could starve the pool).

The caller's credentials go along: the browser's own ``Authorization``
header, or else the token the UI's script obtained after a 401 and keeps in
the ``dockyard_ui_token`` cookie (SameSite=Strict, read only here, by pages
that only read; the API itself never looks at cookies, so a cookie can never
authorize a change).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

TOKEN_COOKIE = "dockyard_ui_token"
# A config blob or manifest the UI reads whole; larger ones are not shown.
MAX_BODY = 4 * 1024 * 1024
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes
    truncated: bool = False

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def challenge(self) -> str | None:
        """The Bearer challenge of a 401, which the page hands to its script."""
        return self.headers.get("www-authenticate") if self.status == 401 else None


class _FileWrapper:
    """wsgi.file_wrapper for the sub-request: a blob served from the shared disk."""

    def __init__(self, f: Any, block: int = 65536) -> None:
        self.f, self.block = f, block

    def __iter__(self) -> Any:
        return iter(lambda: self.f.read(self.block), b"")

    def close(self) -> None:
        self.f.close()


class Api:
    """One page's client: the caller's identity, and the public app it calls."""

    def __init__(self, app: Wsgi, environ: dict[str, Any]) -> None:
        self._app = app
        self._outer = environ
        self.host = environ.get("HTTP_HOST") or (
            f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}")
        self._authorization = environ.get("HTTP_AUTHORIZATION") or _bearer_from_cookie(
            environ.get("HTTP_COOKIE", ""))

    def get(self, path: str, query: dict[str, Any] | list[tuple[str, Any]] | None = None,
            accept: str = "application/json") -> Answer:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": urlencode(query or {}, doseq=True),
            "SERVER_NAME": self._outer.get("SERVER_NAME", "localhost"),
            "SERVER_PORT": self._outer.get("SERVER_PORT", "80"),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self._outer.get("REMOTE_ADDR", "127.0.0.1"),
            "HTTP_HOST": self.host,
            "HTTP_ACCEPT": accept,
            "HTTP_USER_AGENT": "dockyard-ui",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self._outer.get("wsgi.url_scheme", "http"),
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": self._outer.get("wsgi.errors"),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": _FileWrapper,
        }
        if self._authorization:
            environ["HTTP_AUTHORIZATION"] = self._authorization
        if self._outer.get("HTTP_X_REQUEST_ID"):
            environ["HTTP_X_REQUEST_ID"] = self._outer["HTTP_X_REQUEST_ID"]
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            started["status"] = int(status[:3])
            started["headers"] = {k.lower(): v for k, v in headers}
            return lambda data: None

        body = self._app(environ, start_response)
        chunks, size, truncated = [], 0, False
        try:
            for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    truncated = True
                    break
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return Answer(started.get("status", 502), started.get("headers", {}),
                      b"".join(chunks), truncated)


def _bearer_from_cookie(cookie_header: str) -> str | None:
    for part in cookie_header.split(";"):
        key, _, value = part.strip().partition("=")
        # A token is base64url and dots; anything else is not forwarded.
        if key == TOKEN_COOKIE and value and all(c.isalnum() or c in "-_.~+/=" for c in value):
            return f"Bearer {value}"
    return None
