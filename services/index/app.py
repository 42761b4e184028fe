"""The index service: tags, repositories, referrers and search, kept in Redis."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import redis

from services.index.resources.listing import CatalogResource, TagsResource
from services.index.resources.referrers import ReferrersResource
from services.index.resources.search import SearchResource
from services.index.resources.summaries import (
    RepositorySummariesResource,
    TagSummariesResource,
)
from services.index.search import SearchIndex
from services.index.store import IndexStore
from shared import errors, events, routing
from shared.health import add_health_routes
from shared.observability import AccessLog, Metrics, MetricsResource
from shared.redis_client import DEFAULT_URL, ReplicaAck, connect, from_section, is_retryable
from shared.rpc import RpcResource
from shared.service_auth import RequireSignature, key_from_config

log = logging.getLogger("dockyard.index")

DEFAULT_REDIS_URL = DEFAULT_URL


def connect_redis(section: dict[str, Any]) -> redis.Redis:
    """The client of ``index.redis``: one server by URL, or the primary behind Sentinel."""
    return connect(from_section(section), socket_timeout=5, socket_connect_timeout=2,
                   health_check_interval=10, max_connections=64)


def redis_client(url: str) -> redis.Redis:
    return connect_redis({"url": url})


def create_app(config: dict[str, Any], *, client: redis.Redis | None = None,
               start_background: bool = False) -> Any:
    """Build the index WSGI app; `client` may be injected by tests.

    `start_background` subscribes to the index's own events, which lets a
    search skip asking Redis whether the catalog changed.
    """
    cfg = config["index"]
    key = key_from_config(config)
    client = client or connect_redis(cfg["redis"])
    store = IndexStore(client, cfg["redis"]["key_prefix"], ReplicaAck(
        cfg["redis"]["min_replicas_ack"], cfg["redis"]["replica_ack_timeout"]),
        tuple(e["name"] for e in config["notifications"]["endpoints"]))
    search = SearchIndex(store, refresh=cfg["search_refresh"])
    if start_background:
        events.Subscription(from_section(cfg["redis"]), store.keys.events,
                            search.changed, search.events_state).start()
    retry_after = config["router"]["retry_after"]

    app = falcon.App(media_type="application/json")
    errors.install(app)

    def redis_failed(req: falcon.Request, resp: falcon.Response, ex: Exception,
                     params: dict[str, Any]) -> None:
        # Down, failing over, loading, or short of replicas: the write was not
        # acknowledged, and the client may send it again (see shared.redis_client).
        if not is_retryable(ex):
            log.error("redis refused %s %s: %s", req.method, req.path, ex)
            errors.respond(resp, errors.InternalError())
            return
        errors.respond(resp, errors.Unavailable("the index database is unavailable",
                                                retry_after=retry_after))

    app.add_error_handler(redis.exceptions.RedisError, redis_failed)

    router = routing.RegexRouter()
    router.add(routing.TAGS, TagsResource(store))
    router.add(routing.REFERRERS, ReferrersResource(store))
    router.add(routing.CATALOG, CatalogResource(store))
    router.add(routing.REPOSITORY_SUMMARIES, RepositorySummariesResource(store))
    router.add(routing.TAG_SUMMARIES, TagSummariesResource(store))
    router.install(app, r"/v2/")
    app.add_route("/v1/search", SearchResource(search))
    app.add_route("/internal/rpc/{method}", RpcResource({
        "put_manifest": store.put_manifest,
        "put_manifests": store.put_manifests,
        "resolve_tag": store.resolve_tag,
        "delete_tag": store.delete_tag,
        "delete_manifest": store.delete_manifest,
        "repository_changed": store.repository_changed,
        "record_events": store.record_events,
    }))

    def ready() -> tuple[bool, dict[str, Any]]:
        try:
            ok = store.ping()
        except redis.exceptions.RedisError:
            ok = False
        return ok, {"redis": "up" if ok else "down"}

    add_health_routes(app, ready)
    metrics = Metrics("index")
    app.add_route("/metrics", MetricsResource(metrics))
    # Only dockyard's own services may call in (shared/service_auth.py).
    return AccessLog(RequireSignature(app, key), metrics, enabled=config["log"]["access"])
