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

from services.router.backends import Pool
from services.router.proxy import API_VERSION, forward
from services.router.shared_disk import SharedDisk
from shared import errors, routing
from shared.health import HealthResource
from shared.observability import AccessLog, Metrics

_STORAGE_ROUTES = [re.compile(p) for p in
                   (routing.UPLOADS, routing.UPLOAD, routing.BLOB, routing.MANIFEST)]
_INDEX_ROUTES = [re.compile(p) for p in
                 (routing.TAGS, routing.REFERRERS, routing.CATALOG, routing.SEARCH)]


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


def create_app(config: dict[str, Any], *, metrics: Metrics | None = None) -> Any:
    cfg = config["router"]
    timeout = cfg["backend_timeout"]
    maxsize = cfg["threads"] * 2
    storage = Pool("storage", cfg["storage_urls"], timeout, maxsize)
    index = Pool("index", cfg["index_urls"], timeout, maxsize)
    retry_after = cfg["retry_after"]
    disk = SharedDisk(cfg["storage_root"]) if cfg["storage_root"] else None

    local = falcon.App(media_type="application/json")
    errors.install(local)
    local.add_route("/v2", VersionResource())
    local.add_route("/v2/", VersionResource())
    local.add_route("/v1/_ping", PingResource())
    local.add_route("/healthz", HealthResource())
    local.add_route("/readyz", ReadyResource([storage, index]))
    local.add_route("/openapi.yaml", OpenApiResource())

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(("/v2/", "/v1/search")):
            for pool, routes in ((storage, _STORAGE_ROUTES), (index, _INDEX_ROUTES)):
                if any(r.fullmatch(path) for r in routes):
                    return forward(pool, environ, start_response, retry_after,
                                   disk if pool is storage else None)
        return local(environ, _with_api_version(start_response))

    return AccessLog(app, metrics or Metrics("router"), enabled=config["log"]["access"])


def _with_api_version(start_response: Any) -> Any:
    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(k.lower() == API_VERSION[0].lower() for k, _ in headers):
            headers.append(API_VERSION)
        return start_response(status, headers, exc_info)

    return wrapped
