"""The storage service: blobs, uploads and manifest bytes on disk."""

from __future__ import annotations

from typing import Any

import falcon

from services.storage import proxy
from services.storage.backends import is_object_store, open_backend
from services.storage.blobstore import BlobStore
from services.storage.index_client import IndexClient
from services.storage.notifier import Notifier
from services.storage.paths import Layout
from services.storage.resources.blobs import BlobResource
from services.storage.resources.manifests import ManifestResource
from services.storage.resources.repository import RepositoryResource
from services.storage.resources.uploads import UploadResource, UploadStartResource
from services.storage.resources.usage import UsageResource
from services.storage.uploads import UploadStore
from shared import errors, events, routing
from shared.health import add_health_routes
from shared.observability import AccessLog, Metrics, MetricsResource
from shared.rpc import RpcClient
from shared.service_auth import RequireSignature, key_from_config


def create_app(config: dict[str, Any], *, index: IndexClient | None = None,
               start_background: bool = False) -> Any:
    """Build the storage WSGI app; `index` may be injected by tests.

    `start_background` starts the threads a serving process needs: the purge
    of abandoned uploads and the subscription to index events.
    """
    cfg = config["storage"]
    key = key_from_config(config)
    layout = Layout(cfg["root"])
    layout.create(scratch_only=is_object_store(config))
    blobs = BlobStore(layout, open_backend(config, layout))
    uploads = UploadStore(layout, blobs, max_per_repository=cfg["max_uploads_per_repository"],
                          max_age=cfg["upload_max_age"])
    if index is None:
        rpc = RpcClient(cfg["index_urls"], timeout=cfg["rpc_timeout"], signer=key,
                        **config["discovery"])
        if start_background:
            rpc.start()
        index = IndexClient(
            rpc,
            fresh_ttl=cfg["tag_cache_ttl"], stale_if_error=cfg["stale_if_error"],
            retry_after=config["router"]["retry_after"],
        )
    if start_background:
        uploads.start_purger(cfg["upload_purge_interval"])
        if cfg["events_url"] and cfg["tag_cache_ttl"] > 0:
            events.Subscription(cfg["events_url"],
                                events.channel(config["index"]["redis"]["key_prefix"]),
                                index.cache.invalidate, index.cache.events_state).start()

    metrics = Metrics("storage")
    notifier = Notifier(config, index, metrics)

    app = falcon.App(media_type="application/json")
    errors.install(app)
    router = routing.RegexRouter()
    start: Any = UploadStartResource(blobs, uploads, notifier)
    blob: Any = BlobResource(blobs, cfg["delete_enabled"], notifier)
    manifest: Any = ManifestResource(
        blobs, index, max_size=cfg["manifest_max_size"], delete_enabled=cfg["delete_enabled"],
        notifier=notifier)
    mirrors = proxy.upstream_map(config)
    if mirrors:
        start, blob, manifest = proxy.wrap(config, mirrors, blobs, index, start, blob, manifest,
                                           metrics, notifier, start_background)
    # Upload routes first: an upload URL also has the shape of a blob URL.
    router.add(routing.UPLOADS, start)
    router.add(routing.UPLOAD, UploadResource(uploads, notifier))
    router.add(routing.BLOB, blob)
    router.add(routing.MANIFEST, manifest)
    router.install(app, r"/v2/")
    admin = routing.RegexRouter()
    admin.add(routing.REPOSITORY, RepositoryResource(blobs, index,
                                                     delete_enabled=cfg["delete_enabled"],
                                                     notifier=notifier))
    admin.add(routing.USAGE, UsageResource(config))
    admin.install(app, routing.API)

    add_health_routes(app, blobs.backend.ready)
    if start_background and config["gc"]["interval"] > 0:
        from services.gc.background import Background

        Background(config, metrics).start()
    app.add_route("/metrics", MetricsResource(metrics))
    # Only dockyard's own services may call in (shared/service_auth.py).
    return AccessLog(RequireSignature(app, key), metrics, enabled=config["log"]["access"])
