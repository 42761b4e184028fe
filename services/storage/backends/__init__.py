"""Storage backends: the filesystem (the default) and S3-compatible object stores.

`base` states the interface and the rules every backend keeps; `open_backend`
builds the one a configuration names. The S3 backend, and boto3 with it, is
imported only when ``storage.backend`` is ``s3``.
"""

from __future__ import annotations

from typing import Any

from services.storage.backends.base import Backend
from services.storage.backends.filesystem import FilesystemBackend
from services.storage.paths import Layout


def open_backend(config: dict[str, Any], layout: Layout) -> Backend:
    """The backend of `config`; `layout` is the local root (the scratch for s3).

    On S3 the collector's fences live in the index's Redis (`redis_fences`), so
    storage on S3 needs it: ``index.redis.url``, ``storage.events_url`` (which
    `dockyard serve` sets) or ``gc.redis_url``."""
    cfg = config["storage"]
    if cfg["backend"] == "s3":
        from services.storage.backends.s3 import S3Backend
        from services.storage.redis_fences import RedisFences
        from shared import redis_client

        client, ack = redis_client.index_client(config, socket_timeout=cfg["s3"]["timeout"],
                                                socket_connect_timeout=5)
        prefix = config["index"]["redis"]["key_prefix"]
        return S3Backend(cfg["s3"], scratch=layout.tmp,
                         fences=lambda delete, epoch: RedisFences(client, prefix, ack,
                                                                  delete, epoch))
    return FilesystemBackend(layout)


def is_object_store(config: dict[str, Any]) -> bool:
    return bool(config["storage"]["backend"] == "s3")
