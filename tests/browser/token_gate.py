"""A stand-in for registry token auth, in front of the test's `dockyard serve`,
and the web UI reading through it.

The gate speaks what Docker's token flow specifies, and what the UI must
handle: an API request without a token that covers it gets 401 with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; ``GET
/auth/token`` with HTTP Basic credentials answers ``{"token", "access_token"}``,
a JWT whose ``access`` claim lists what was granted of what was asked. The
tokens are not signed (the gate trusts only the tokens it keeps). Requests
that pass are proxied to dockyard.

`serving` puts the UI (`services.router.ui`, installed exactly as the router
installs it) in front, reading through the gate as its public API: so the
pages' own reads are refused or allowed as a browser's are.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

import falcon
import urllib3
from waitress.server import create_server

from services.router import ui
from shared import errors

USERS = {"alice": ("secret", {"pull", "delete"}), "bob": ("secret", {"pull"}),
         "carol": ("secret", set())}
SERVICE = "dockyard-test"
_REPO = re.compile(r"^/v2/(?P<name>.+?)/(manifests|blobs|tags|referrers|_dockyard)/")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenGate:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.http = urllib3.PoolManager(retries=False, timeout=30)
        self.tokens: dict[str, list[dict[str, Any]]] = {}
        self.base = ""
        # Whether anyone may pull without a token, as many registries allow.
        self.anonymous_pull = False

    @staticmethod
    def _needed(method: str, path: str) -> tuple[str, str, str] | None:
        if path in ("/v2/", "/v2"):
            return "registry", "", ""
        if path.startswith(("/v2/_catalog", "/v1/search", "/v2/_dockyard/")):
            return "registry", "catalog", "*"
        m = _REPO.match(path)
        if m:
            return "repository", m.group("name"), "delete" if method == "DELETE" else "pull"
        return None

    def _grant(self, user: str, scopes: list[str]) -> list[dict[str, Any]]:
        allowed = USERS[user][1]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "registry":
                access.append({"type": kind, "name": name, "actions": ["*"]})
            elif kind == "repository":
                access.append({"type": kind, "name": name,
                               "actions": [a for a in actions.split(",") if a in allowed]})
        return access

    def _token(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        user, password = "", ""
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if USERS.get(user, ("",))[0] != password or not password:
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}']
        scopes = parse_qs(environ.get("QUERY_STRING", "")).get("scope", [])
        access = self._grant(user, scopes)
        claims = {"sub": user, "aud": SERVICE, "access": access}
        token = ".".join([_b64(b'{"alg":"none"}'), _b64(json.dumps(claims).encode()),
                          secrets.token_urlsafe(8)])
        self.tokens[token] = access
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]

    def _allowed(self, environ: dict[str, Any], kind: str, name: str, action: str) -> bool:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        access = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if access is None:
            return self.anonymous_pull and action in ("pull", "*")
        if kind == "registry" and not name:
            return True
        if self.anonymous_pull and action in ("pull", "*"):
            return True
        return any(a["type"] == kind and a["name"] == name and
                   (action in a["actions"] or "*" in a["actions"]) for a in access)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == "/auth/token":
            return self._token(environ, start_response)
        needed = self._needed(method, path)
        if needed is not None and not self._allowed(environ, *needed):
            kind, name, action = needed
            scope = f',scope="{kind}:{name}:{action}"' if name else ""
            start_response("401 Unauthorized", [
                ("Content-Type", "application/json"),
                ("WWW-Authenticate",
                 f'Bearer realm="{self.base}/auth/token",service="{SERVICE}"{scope}')])
            return [b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication '
                    b'required", "detail": null}]}']
        url = self.upstream + path + (
            "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items()
                   if k.startswith("HTTP_") and k not in ("HTTP_AUTHORIZATION",
                                                          "HTTP_CONNECTION")}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        r = self.http.request(method, url, body=body, headers=headers, redirect=False)
        start_response(f"{r.status} {r.reason}", [
            (k, v) for k, v in r.headers.items()
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive")])
        return [r.data]


def site(gate: TokenGate) -> Any:
    """The gate's API and token paths, and the UI for every other path."""
    pages = falcon.App(media_type="application/json")
    errors.install(pages)
    ui.install(pages, gate)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(("/v2", "/v1/", "/auth/")):
            return gate(environ, start_response)
        return pages(environ, start_response)

    return app


@contextmanager
def serving(upstream: str) -> Iterator[TokenGate]:
    gate = TokenGate(upstream)
    server = create_server(site(gate), host="127.0.0.1", port=0, threads=4,
                           ident="token-gate")
    gate.base = f"http://127.0.0.1:{server.effective_port}"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        server.close()
        thread.join(timeout=5)
