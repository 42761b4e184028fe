"""The router: the registry's single public endpoint, in front of the service pools.

It answers the version check, the legacy ping, its health endpoints and the
API description itself; it forwards blob and manifest requests to storage,
and listing, referrers and search requests to the index; everything else,
the services' internal endpoints included, is a 404.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import falcon

from services.router import ui
from services.router.backends import Pool
from services.router.proxy import API_VERSION, forward
from services.router.response_cache import Capture, ResponseCache
from services.router.shared_disk import SharedDisk
from shared import errors, events, routing
from shared.event_cache import EventCache
from shared.health import HealthResource
from shared.observability import AccessLog, Metrics

# Forwarded routes: the pool that answers each, and the scope of index state
# its answers derive from, for the response cache (None: never cached).
_REPO, _CATALOG = "repo", "catalog"
_ROUTES = [(re.compile(pattern), pool, scope) for pattern, pool, scope in (
    (routing.UPLOADS, "storage", None),
    (routing.UPLOAD, "storage", None),
    (routing.BLOB, "storage", None),
    (routing.MANIFEST, "storage", _REPO),
    (routing.TAGS, "index", _REPO),
    (routing.REFERRERS, "index", _REPO),
    (routing.CATALOG, "index", _CATALOG),
    (routing.SEARCH, "index", _CATALOG),
    (routing.REPOSITORY_SUMMARIES, "index", None),
    (routing.TAG_SUMMARIES, "index", _REPO),
)]


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
    storage = Pool("storage", cfg["storage_urls"], timeout, maxsize)
    index = Pool("index", cfg["index_urls"], timeout, maxsize)
    pools = {"storage": storage, "index": index}
    retry_after = cfg["retry_after"]
    disk = SharedDisk(cfg["storage_root"]) if cfg["storage_root"] else None
    if cache is None:
        cache = ResponseCache(EventCache(ttl=cfg["cache_ttl"],
                                         max_bytes=cfg["cache_max_bytes"]), metrics)
    if start_background and cfg["events_url"] and cfg["cache_ttl"] > 0:
        events.Subscription(cfg["events_url"],
                            events.channel(config["index"]["redis"]["key_prefix"]),
                            cache.cache.invalidate, cache.cache.events_state).start()

    local = falcon.App(media_type="application/json")
    errors.install(local)
    local.add_route("/v2", VersionResource())
    local.add_route("/v2/", VersionResource())
    local.add_route("/v1/_ping", PingResource())
    local.add_route("/healthz", HealthResource())
    local.add_route("/readyz", ReadyResource([storage, index]))
    local.add_route("/openapi.yaml", OpenApiResource())
    # The web UI reads through `app`, the same public API (and checks) as any client.
    ui.install(local, lambda environ, start_response: app(environ, start_response))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(("/v2/", "/v1/search")):
            for regex, pool_name, scope_kind in _ROUTES:
                m = regex.fullmatch(path)
                if m is None:
                    continue
                pool = pools[pool_name]

                def fetch(capture: Capture | None, as_get: bool, pool: Pool = pool) -> Any:
                    return forward(pool, environ, start_response, retry_after,
                                   disk if pool is storage else None, capture, as_get)

                if scope_kind is None:
                    return fetch(None, False)
                scope = (events.repo_scope(m.group("name")) if scope_kind == _REPO
                         else events.CATALOG_SCOPE)
                return cache.handle(environ, start_response, scope, fetch)
        return local(environ, _with_api_version(start_response))

    return AccessLog(app, metrics, enabled=config["log"]["access"])


def _with_api_version(start_response: Any) -> Any:
    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(k.lower() == API_VERSION[0].lower() for k, _ in headers):
            headers.append(API_VERSION)
        return start_response(status, headers, exc_info)

    return wrapped
