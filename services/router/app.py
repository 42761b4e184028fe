"""The router: the registry's single public endpoint, in front of the service pools.

It answers the version check, the legacy ping, its health endpoints, the
token endpoint and the API description itself; it forwards blob and manifest
requests to storage, and listing, referrers and search requests to the
index; everything else, the services' internal endpoints included, is a 404.

Each request goes through four steps, in this order:
1. match: the route, and from it the repository name;
2. authorize (when access control is configured, `services.router.auth`):
   who the caller is and whether the route's access is granted; nothing
   after this step runs for a refused request, so no cache and no backend
   can answer it;
3. cache: answers derived from index state, shared by every caller allowed
   to see them (catalog and search answers, which differ per caller, are
   filtered by `auth.listing` instead and never cached);
4. forward, with the caller's identity in ``X-Dockyard-Identity``.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

import falcon

from services.router import ui
from services.router.auth import audit, listing
from services.router.auth.kinds import LISTINGS, USAGE
from services.router.backends import Pool
from services.router.proxy import API_VERSION, forward
from services.router.response_cache import Capture, ResponseCache
from services.router.shared_disk import SharedDisk
from services.router.store_fetch import StoreFetch
from shared import errors, events, routing
from shared.auth import identity as identity_mod
from shared.auth import settings as auth_settings
from shared.event_cache import EventCache
from shared.health import HealthResource
from shared.observability import AccessLog, Metrics
from shared.service_auth import key_from_config

# The access controller (PyJWT, cryptography, bcrypt) is imported only when
# access control is configured: a router without it does not pay their RSS.
if TYPE_CHECKING:
    from services.router.auth.controller import AccessController

log = logging.getLogger("dockyard.router")

# Forwarded routes: their kind (for access control and audit), the pool that
# answers each, and the scope of index state its answers derive from, for the
# response cache (None: never cached).
_REPO, _CATALOG = "repo", "catalog"
_ROUTES = [(re.compile(pattern), kind, pool, scope) for pattern, kind, pool, scope in (
    (routing.UPLOADS, "uploads", "storage", None),
    (routing.UPLOAD, "upload", "storage", None),
    (routing.BLOB, "blob", "storage", None),
    (routing.MANIFEST, "manifest", "storage", _REPO),
    (routing.TAGS, "tags", "index", _REPO),
    (routing.REFERRERS, "referrers", "index", _REPO),
    (routing.CATALOG, "catalog", "index", _CATALOG),
    (routing.SEARCH, "search", "index", _CATALOG),
    # Administration (docs/garbage-collection.md): a repository DELETE needs the
    # delete permission on it; usage, with access control on, an administrator.
    (routing.REPOSITORY, "repository", "storage", _REPO),
    (routing.USAGE, USAGE, "storage", None),
    (routing.REPOSITORY_SUMMARIES, "summaries", "index", None),
    (routing.TAG_SUMMARIES, "tag_summaries", "index", _REPO),
)]
_BASE_PATHS = ("/v2", "/v2/")


class VersionResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.set_header(*API_VERSION)
        resp.content_type = "application/json"
        resp.data = b"{}"

    # RFC 9110 9.1: HEAD goes wherever GET does; some clients probe /v2/ with it.
    on_head = on_get


class PingResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.set_header("X-Docker-Registry-Standalone", "true")
        resp.set_header("X-Docker-Registry-Version", "0.6.0")
        resp.content_type = "application/json"
        resp.data = b"true"

    on_head = on_get


class ReadyResource:
    """Ready when every pool has a backend whose /readyz answers 200; lists each one."""

    def __init__(self, pools: list[Pool]) -> None:
        self._pools = pools

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report: dict[str, Any] = {}
        ready = True
        for pool in self._pools:
            states = {b.url: b.probe()[1] for b in pool.backends}
            report[pool.name] = states
            ready = ready and any(state == "ready" for state in states.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.content_type = "application/json"
        resp.data = json.dumps({"ready": ready, "backends": report}).encode()


class OpenApiResource:
    def __init__(self) -> None:
        self._text = resources.files("services.router").joinpath("openapi.yaml").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/yaml"
        resp.data = self._text


def create_app(config: dict[str, Any], *, metrics: Metrics | None = None,
               cache: ResponseCache | None = None, start_background: bool = False) -> Any:
    """Build the router WSGI app; `cache` may be injected by tests.

    `start_background` subscribes to index events, which turns the response
    cache on (when `router.events_url` is set).
    """
    cfg = config["router"]
    metrics = metrics or Metrics("router")
    timeout = cfg["backend_timeout"]
    maxsize = cfg["threads"] * 2
    discovery = config["discovery"]
    key = key_from_config(config)  # storage and the index answer only signed calls
    storage = Pool("storage", cfg["storage_urls"], timeout, maxsize, signer=key, **discovery)
    index = Pool("index", cfg["index_urls"], timeout, maxsize, signer=key, **discovery)
    pools = {"storage": storage, "index": index}
    retry_after = cfg["retry_after"]
    disk = SharedDisk(cfg["storage_root"]) if cfg["storage_root"] else None
    s3 = config["storage"]["s3"]
    store = StoreFetch(float(s3["timeout"]), maxsize, s3["verify_tls"])
    if cache is None:
        cache = ResponseCache(EventCache(ttl=cfg["cache_ttl"],
                                         max_bytes=cfg["cache_max_bytes"]), metrics)
    if start_background:
        storage.start()
        index.start()
    if start_background and cfg["events_url"] and cfg["cache_ttl"] > 0:
        events.Subscription(cfg["events_url"],
                            events.channel(config["index"]["redis"]["key_prefix"]),
                            cache.cache.invalidate, cache.cache.events_state).start()

    access = _access_controller(config)
    # A manifest GET that makes a webhook event must reach storage, which records it.
    notify = config["notifications"]
    uncached = {"manifest"} if notify["endpoints"] and notify["manifest_pull"] else set()
    local = falcon.App(media_type="application/json")
    errors.install(local)
    local.add_route("/v2", VersionResource())
    local.add_route("/v2/", VersionResource())
    local.add_route("/v1/_ping", PingResource())
    local.add_route("/healthz", HealthResource())
    local.add_route("/readyz", ReadyResource([storage, index]))
    local.add_route("/openapi.yaml", OpenApiResource())
    if access is not None:
        from services.router.auth.token_endpoint import TokenResource

        local.add_route("/auth/token", TokenResource(access))
    # The web UI reads through `app`, the same public API (and checks) as any client.
    ui.install(local, lambda environ, start_response: app(environ, start_response))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        # 1. match
        kind, pool_name, scope_kind, groups = _match(path)
        # 2. authorize
        identity = None
        if access is not None and kind is not None:
            try:
                identity = access.authorize(environ, kind, groups.get("name"),
                                            groups.get("upload_id"))
            except errors.RegistryError as e:
                from services.router.auth.controller import error_response

                return error_response(environ, start_response, e, API_VERSION)
            environ[identity_mod.ENVIRON_KEY] = identity
        if pool_name is None:
            return local(environ, _with_api_version(start_response))
        pool = pools[pool_name]
        method = environ["REQUEST_METHOD"]
        if identity is not None and kind in LISTINGS and method in ("GET", "HEAD"):
            return _filtered_listing(access, identity, kind, pool, environ, start_response,
                                     retry_after)
        if identity is not None and kind in ("uploads", "upload"):
            start_response = _bind_uploads(access, identity, groups["name"], start_response)
        if method not in ("GET", "HEAD"):
            start_response = audit.wrap(start_response, kind, method,
                                        identity.name if identity else "", groups)

        def fetch(capture: Capture | None, as_get: bool) -> Any:
            # 4. forward
            return forward(pool, environ, start_response, retry_after,
                           disk if pool is storage else None, capture, as_get,
                           store if pool is storage else None)

        if scope_kind is None or kind in uncached:
            return fetch(None, False)
        # 3. cache
        scope = (events.repo_scope(groups["name"]) if scope_kind == _REPO
                 else events.CATALOG_SCOPE)
        return cache.handle(environ, start_response, scope, fetch)

    return AccessLog(app, metrics, enabled=config["log"]["access"])


def _match(path: str) -> tuple[str | None, str | None, str | None, dict[str, str]]:
    """(kind, pool, cache scope kind, the route's groups) of a path; kind None: not ours."""
    if path.startswith(("/v2/", "/v1/search", routing.API)):
        for regex, kind, pool_name, scope_kind in _ROUTES:
            m = regex.fullmatch(path)
            if m is not None:
                return kind, pool_name, scope_kind, m.groupdict()
    if path in _BASE_PATHS:
        return "base", None, None, {}
    return None, None, None, {}


def _access_controller(config: dict[str, Any]) -> AccessController | None:
    if not auth_settings.enabled(config):
        return None
    from services.router.auth.controller import AccessController
    from shared.auth.tokens import SigningKey

    path = config["auth"]["token"]["key"]
    if path:
        key = SigningKey.load(path)
    else:
        import tempfile

        from shared.auth.tokens import generate_key

        # Without a configured key (a router started on its own), tokens and
        # upload URLs are good at this router process only.
        log.warning("auth.token.key is not set: signing tokens with a key of this "
                    "process; other routers will not accept them")
        with tempfile.TemporaryDirectory() as tmp:
            generate_key(f"{tmp}/key.pem")
            key = SigningKey.load(f"{tmp}/key.pem")
    return AccessController(config, key)


def _filtered_listing(access: Any, identity: Any, kind: str, pool: Pool,
                      environ: dict[str, Any], start_response: Any, retry_after: int) -> Any:
    from services.router.auth.controller import error_response

    answer = {"catalog": listing.catalog, "search": listing.search,
              "summaries": listing.summaries}[kind]
    try:
        headers, body = answer(pool, environ, lambda name: access.may_list(identity, name),
                               retry_after, access.cursors)
    except errors.RegistryError as e:
        return error_response(environ, start_response, e, API_VERSION)
    start_response("200 OK", [*headers, ("Content-Length", str(len(body))), API_VERSION])
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


def _bind_uploads(access: Any, identity: Any, name: str, start_response: Any) -> Any:
    """Add the caller's `_state` to every upload-session Location it is handed."""

    def bound(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if status[:3] in ("202", "204"):
            headers = [(k, access.uploads.bind(v, identity.name, name)
                        if k.lower() == "location" else v) for k, v in headers]
        return start_response(status, headers, exc_info)

    return bound


def _with_api_version(start_response: Any) -> Any:
    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(k.lower() == API_VERSION[0].lower() for k, _ in headers):
            headers.append(API_VERSION)
        return start_response(status, headers, exc_info)

    return wrapped
