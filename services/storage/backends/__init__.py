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

UNSUPPORTED_ON_S3 = "not supported with storage.backend s3 (docs/object-storage.md)"


def open_backend(config: dict[str, Any], layout: Layout) -> Backend:
    """The backend of `config`; `layout` is the local root (the scratch for s3)."""
    cfg = config["storage"]
    if cfg["backend"] == "s3":
        from services.storage.backends.s3 import S3Backend

        return S3Backend(cfg["s3"], scratch=layout.tmp)
    return FilesystemBackend(layout)


def is_object_store(config: dict[str, Any]) -> bool:
    return bool(config["storage"]["backend"] == "s3")
