"""Building a collector from the configuration, for the CLI and the storage process.

The collector needs the storage root (a directory it shares with every
storage process) and the index's Redis. With ``--data-dir D`` of
``dockyard serve``, both are found under D: the storage root at
``D/storage`` and the private Redis's URL in ``D/serve.json``, which
`serve` writes when it starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.gc import retention, usage
from services.gc.collector import Collector, Settings
from services.gc.events import GcEvents
from services.gc.report import Progress, Report, save_summary
from services.gc.serve_file import SERVE_FILE, write_serve_file  # noqa: F401 (re-exported)
from services.index.read_model import IndexReader
from services.index.store import IndexStore
from services.storage.backends import is_object_store, open_backend
from services.storage.blobstore import BlobStore
from services.storage.paths import Layout
from shared import redis_client
from shared.config import ConfigError

USAGE_FILE = "usage.json"
DEFAULT_ROOT = "./dockyard-data/storage"


def served_config(data_dir: Path) -> str | None:
    """The configuration file `dockyard serve --data-dir data_dir` runs with, if any."""
    try:
        served = json.loads((data_dir / SERVE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return served.get("config") or None


def apply_data_dir(config: dict[str, Any], data_dir: Path) -> None:
    """Point `config` at the deployment `dockyard serve --data-dir data_dir` runs."""
    try:
        served = json.loads((data_dir / SERVE_FILE).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{data_dir}: no {SERVE_FILE}; is `dockyard serve --data-dir "
                          f"{data_dir}` running (or has it run)?") from None
    # The file records serve's configuration file, not its environment: a backend
    # chosen by DOCKYARD_* variables that this shell lacks would point the command
    # at an empty local root (and fsck --repair at deleting every index entry).
    backend = served.get("storage_backend", "filesystem")
    if backend != config["storage"]["backend"]:
        raise ConfigError(
            f"storage.backend: `dockyard serve --data-dir {data_dir}` runs with {backend!r}, "
            f"this command's configuration says {config['storage']['backend']!r}; run it "
            "with serve's DOCKYARD_* variables or --config")
    config["storage"]["root"] = served.get("storage_root") or str(data_dir / "storage")
    if not config["gc"]["redis_url"] and not config["index"]["redis"]["url"]:
        config["gc"]["redis_url"] = served["redis"]


def redis_url(config: dict[str, Any]) -> str:
    """The index's Redis, as a URL (``redis+sentinel://`` for a Sentinel setup)."""
    return redis_client.index_url(config)


def settings(config: dict[str, Any]) -> Settings:
    cfg = config["gc"]
    try:
        policies = tuple(retention.parse_all(cfg["retention"]))
    except retention.PolicyError as e:
        raise ConfigError(f"gc.retention: {e}") from None
    untagged = cfg["untagged_max_age"]
    return Settings(grace=float(cfg["grace"]),
                    untagged_max_age=None if untagged < 0 else float(untagged),
                    policies=policies, upload_max_age=config["storage"]["upload_max_age"])


def collector(config: dict[str, Any], *, progress: Progress | None = None,
              overrides: dict[str, Any] | None = None) -> Collector:
    """The collector of `config`'s storage, on either backend (with S3, its fences
    are in the index's Redis: `services.storage.redis_fences`)."""
    layout = Layout(config["storage"]["root"])
    layout.create(scratch_only=is_object_store(config))
    # Index writes wait for the replicas the index's own writes wait for.
    client, ack = redis_client.index_client(config, socket_timeout=30,
                                            socket_connect_timeout=5)
    prefix = config["index"]["redis"]["key_prefix"]
    chosen = settings(config)
    if overrides:
        chosen = Settings(**{**chosen.__dict__, **overrides})
    groups = tuple(e["name"] for e in config["notifications"]["endpoints"])
    return Collector(BlobStore(layout, open_backend(config, layout)),
                     IndexStore(client, prefix, ack, groups),
                     IndexReader(client, prefix), chosen, progress,
                     GcEvents.from_config(config))


def cached_from(config: dict[str, Any]) -> Callable[[str], str | None]:
    """Repository name -> the URL of the upstream it mirrors, for usage."""
    from services.storage.proxy.settings import upstream_map

    mirrors = upstream_map(config)

    def lookup(name: str) -> str | None:
        upstream = mirrors.match(name)
        return upstream.url if upstream else None
    return lookup


def record(collector: Collector, report: Report, config: dict[str, Any]) -> None:
    """After a run that deleted: its summary (for metrics) and the usage it leaves."""
    save_summary(collector.layout.gc_file("last-run.json"), report)
    usage.save(collector.layout.gc_file(USAGE_FILE),
               usage.compute(usage.view(collector.snapshot, report),
                             cached_from=cached_from(config)))


def fresh_usage(collector: Collector, config: dict[str, Any]) -> dict[str, Any]:
    """Read everything now (no barrier: nothing is deleted), and cache the answer."""
    answer = usage.compute(usage.view(collector.read()), cached_from=cached_from(config))
    usage.save(collector.layout.gc_file(USAGE_FILE), answer)
    return answer
