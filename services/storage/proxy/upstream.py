"""A client of one upstream registry: the Docker token flow, manifests and blobs.

Built on urllib3, the HTTP client the Python ecosystem trusts (pip and
requests use it), and not on `shared.http_client`, which deliberately leaves
out what talking to the internet needs: TLS with certificate checks,
redirects (Docker Hub answers blob GETs with a redirect to its CDN), proxies
from the environment (``HTTPS_PROXY``) and connection pools per host.

Authentication follows the Docker token specification:

1. a request without credentials gets 401 with ``WWW-Authenticate: Bearer
   realm=...,service=...,scope=...`` (or ``Basic realm=...``);
2. the client asks the realm for a token for ``repository:<name>:pull``,
   with the upstream's username and password as Basic credentials, or
   anonymously without them;
3. the request is sent again with ``Authorization: Bearer <token>``.

Tokens are kept per scope until shortly before ``expires_in`` runs out (60 s
when the server names none, as the specification says), and the challenge's
realm is remembered, so later requests fetch a token first instead of
being refused once more.

Every failure to get an answer (no connection, timeout, 429, 5xx) is
`UpstreamDown`; the caller decides whether a cached copy may stand in.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3

from services.storage.proxy.settings import Upstream

log = logging.getLogger("dockyard.storage.proxy")

MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
# A token is not used in its last seconds: it could expire on its way.
_EXPIRY_MARGIN = 5.0
_DEFAULT_TOKEN_LIFETIME = 60.0


class UpstreamDown(Exception):
    """The upstream gave no usable answer: unreachable, timed out, 429 or 5xx."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="...",service="..."`` -> Challenge; None when unreadable."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip(" ,").lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            if end < 0:
                return None
            params[key] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
        i += 1
    if scheme.lower() not in ("bearer", "basic"):
        return None
    return Challenge(scheme.lower(), params)


class UpstreamClient:
    """Requests to one upstream, authenticated as the upstream wants."""

    def __init__(self, upstream: Upstream, timeout: float) -> None:
        self.upstream = upstream
        kwargs: dict[str, Any] = {}
        if upstream.ca_certs:
            kwargs["ca_certs"] = upstream.ca_certs
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=32, block=False, retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout), **kwargs)
        self._challenge: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.token_fetches = 0

    # -- the public operations -------------------------------------------

    def head_manifest(self, name: str, reference: str) -> urllib3.BaseHTTPResponse:
        return self.request("HEAD", f"/v2/{name}/manifests/{reference}", name,
                            {"Accept": MANIFEST_ACCEPT})

    def get_manifest(self, name: str, reference: str) -> urllib3.BaseHTTPResponse:
        return self.request("GET", f"/v2/{name}/manifests/{reference}", name,
                            {"Accept": MANIFEST_ACCEPT})

    def head_blob(self, name: str, digest: str) -> urllib3.BaseHTTPResponse:
        return self.request("HEAD", f"/v2/{name}/blobs/{digest}", name, {})

    def get_blob(self, name: str, digest: str) -> urllib3.BaseHTTPResponse:
        """The blob's response, its body not yet read (the caller streams it)."""
        return self.request("GET", f"/v2/{name}/blobs/{digest}", name, {}, stream=True)

    # -- requests and the token flow -------------------------------------

    def request(self, method: str, path: str, name: str, headers: dict[str, str],
                stream: bool = False) -> urllib3.BaseHTTPResponse:
        """Send a request with the credentials it needs; 2xx, 3xx and 4xx are
        answers (a 401 after a fresh token too), anything else raises UpstreamDown."""
        scope = f"repository:{name}:pull"
        for attempt in range(2):
            auth = self._authorization(scope)
            sent = dict(headers)
            if auth:
                sent["Authorization"] = auth
            resp = self._send(method, self.upstream.url + path, sent, stream)
            if resp.status != 401 or attempt == 1:
                return self._checked(resp, method, path)
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            resp.drain_conn()
            resp.release_conn()
            if challenge is None:
                return self._checked(resp, method, path)
            with self._lock:
                self._challenge = challenge
                self._tokens.pop(scope, None)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, headers: dict[str, str],
              stream: bool) -> urllib3.BaseHTTPResponse:
        try:
            # Redirects are followed (CDNs) but credentials are not sent to
            # another host: urllib3 drops Authorization on a cross-host redirect.
            return self._http.request(method, url, headers=headers, preload_content=not stream,
                                      redirect=True, retries=urllib3.Retry(
                                          total=None, connect=0, read=0, redirect=5,
                                          status=0, raise_on_redirect=True))
        except urllib3.exceptions.HTTPError as e:
            raise UpstreamDown(f"{self.upstream.url}: {e.__class__.__name__}: {e}") from None

    def _checked(self, resp: urllib3.BaseHTTPResponse, method: str,
                 path: str) -> urllib3.BaseHTTPResponse:
        if resp.status == 429 or resp.status >= 500:
            resp.drain_conn()
            resp.release_conn()
            raise UpstreamDown(f"{self.upstream.url}: {method} {path} answered {resp.status}")
        return resp

    def _authorization(self, scope: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic()
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(scope)
        if cached is not None and cached[1] > now:
            return f"Bearer {cached[0]}"
        token, lifetime = self._fetch_token(challenge, scope)
        with self._lock:
            self._tokens[scope] = (token, now + max(0.0, lifetime - _EXPIRY_MARGIN))
        return f"Bearer {token}" if token else None

    def _basic(self) -> str | None:
        if not self.upstream.username:
            return None
        pair = f"{self.upstream.username}:{self.upstream.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm:
            raise UpstreamDown(f"{self.upstream.url}: a Bearer challenge without a realm")
        fields = {"scope": scope}
        if challenge.params.get("service"):
            fields["service"] = challenge.params["service"]
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        try:
            resp = self._http.request("GET", realm, fields=fields, headers=headers,
                                      retries=False)
        except urllib3.exceptions.HTTPError as e:
            raise UpstreamDown(f"token endpoint {realm}: {e}") from None
        self.token_fetches += 1
        if resp.status != 200:
            # A refused login is the upstream's answer: the request goes on
            # without a token and the upstream's 401 is what the caller sees.
            log.warning("upstream %s: token endpoint %s answered %s", self.upstream.label,
                        realm, resp.status)
            if resp.status == 429 or resp.status >= 500:
                raise UpstreamDown(f"token endpoint {realm} answered {resp.status}")
            return "", 0.0
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise UpstreamDown(f"token endpoint {realm}: an unreadable answer") from None
        if not token:
            raise UpstreamDown(f"token endpoint {realm}: no token in the answer")
        return str(token), lifetime
