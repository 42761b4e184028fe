"""The pull-through cache: repositories of this registry that mirror other registries.

Modules, each with its own rules in its docstring:

- `settings`: the ``proxy.upstreams`` configuration, the prefix -> upstream
  map and Docker Hub's ``library/`` rule;
- `upstream`: an HTTP client of one upstream, with the Docker token flow;
- `fetch`: one upstream fetch per blob, streamed to every client while it
  is written and verified;
- `landing`: how a verified fetch is stored (a rename into ``blobs/``, or a
  commit through an object store's backend) and how its readers learn so;
- `cache`: `PullThrough`, manifests by tag (TTL, stale when the upstream is
  down) and by digest, blobs, metrics;
- `eviction`: age-based eviction of cached manifests (``max_age``);
- `resources`: the storage resources of a mirrored repository.

`wrap` is the one entry point the storage app calls.
"""

from __future__ import annotations

from typing import Any

from services.storage.proxy.settings import UpstreamMap, upstream_map

__all__ = ["upstream_map", "wrap"]


def wrap(config: dict[str, Any], mirrors: UpstreamMap, blobs: Any, index: Any, start: Any,
         blob: Any, manifest: Any, metrics: Any, notifier: Any,
         start_background: bool = False) -> tuple[Any, Any, Any]:
    """The upload-start, blob and manifest resources with the pull-through cache in front.

    `start_background` starts the eviction of old cached manifests, when an
    upstream has a ``max_age``.
    """
    from services.storage.proxy.cache import PullThrough
    from services.storage.proxy.eviction import Evictor
    from services.storage.proxy.resources import (
        ProxyBlobResource,
        ProxyManifestResource,
        ProxyUploadStartResource,
    )

    pull = PullThrough(
        mirrors, blobs, manifest.record,
        lambda name, tag: index.resolve_tag(name, tag, ask_index=True).digest,
        timeout=config["proxy"]["timeout"], retry_after=config["router"]["retry_after"],
        metrics=metrics, evictor=Evictor(mirrors, blobs, index))
    if start_background and any(u.max_age > 0 for u in mirrors.upstreams):
        assert pull.evictor is not None
        pull.evictor.start(config["proxy"]["eviction_interval"])
    return (ProxyUploadStartResource(start, pull), ProxyBlobResource(blob, pull, notifier),
            ProxyManifestResource(manifest, pull))
