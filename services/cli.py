"""The `dockyard` command: run everything, run one service, or check a config file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from shared import config as config_mod
from shared.logs import setup_logging

log = logging.getLogger("dockyard")


def _load(path: str | None) -> dict[str, Any]:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        raise click.ClickException(f"configuration error: {e}") from None


def _setup(service: str, cfg: dict[str, Any]) -> None:
    setup_logging(service, cfg["log"]["level"], cfg["log"]["format"])


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             envvar="DOCKYARD_CONFIG", help="YAML configuration file.")


@click.group()
def main() -> None:
    """dockyard: a self-hosted Docker/OCI container registry."""


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--data-dir", default="./dockyard-data", show_default=True,
              type=click.Path(file_okay=False), help="Where blobs and Redis data live.")
def serve(config_path: str | None, host: str, port: int, data_dir: str) -> None:
    """Run the whole registry on one machine: router, storage, index and Redis."""
    from services import supervisor

    cfg = _load(config_path)
    _setup("serve", cfg)
    try:
        children, addresses = supervisor.plan(cfg, config_path, host, port,
                                              Path(data_dir).resolve())
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    for name, address in addresses.items():
        log.info("%s: %s", name, address)
    sys.exit(supervisor.run(children))


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (storage.listen).")
@click.option("--root", help="Storage root directory (storage.root).")
@click.option("--index", "index_urls", multiple=True, help="Index service URL; repeatable.")
@click.option("--events-url", help="Redis URL for index events (storage.events_url).")
def storage(config_path: str | None, listen: str | None, root: str | None,
            index_urls: tuple[str, ...], events_url: str | None) -> None:
    """Run one storage service."""
    from services.storage.app import create_app
    from shared.server import serve as serve_app

    cfg = _load(config_path)
    section = cfg["storage"]
    section["listen"] = listen or section["listen"]
    section["root"] = root or section["root"]
    if index_urls:
        section["index_urls"] = list(index_urls)
    if events_url is not None:
        section["events_url"] = events_url
    _setup("storage", cfg)
    app = create_app(cfg, start_background=True)
    serve_app(app, section["listen"], cfg, section["threads"], "storage")


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (index.listen).")
@click.option("--redis-url", help="Redis URL (index.redis.url).")
def index(config_path: str | None, listen: str | None, redis_url: str | None) -> None:
    """Run one index service."""
    from services.index.app import create_app
    from shared.server import serve as serve_app

    cfg = _load(config_path)
    section = cfg["index"]
    section["listen"] = listen or section["listen"]
    if redis_url:
        section["redis"]["url"] = redis_url
    _setup("index", cfg)
    app = create_app(cfg, start_background=True)
    serve_app(app, section["listen"], cfg, section["threads"], "index")


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (router.listen).")
@click.option("--storage", "storage_urls", multiple=True, help="Storage URL; repeatable.")
@click.option("--index", "index_urls", multiple=True, help="Index URL; repeatable.")
@click.option("--metrics-listen", help="host:port for /metrics (router.metrics_listen).")
@click.option("--storage-root", help="Shared storage root to send blobs from "
              "(router.storage_root).")
@click.option("--events-url", help="Redis URL for index events (router.events_url).")
def router(config_path: str | None, listen: str | None, storage_urls: tuple[str, ...],
           index_urls: tuple[str, ...], metrics_listen: str | None,
           storage_root: str | None, events_url: str | None) -> None:
    """Run one router: the public endpoint."""
    from prometheus_client import start_http_server

    from services.router.app import create_app
    from shared.config import parse_listen
    from shared.observability import Metrics
    from shared.server import serve as serve_app

    cfg = _load(config_path)
    section = cfg["router"]
    section["listen"] = listen or section["listen"]
    if storage_urls:
        section["storage_urls"] = list(storage_urls)
    if index_urls:
        section["index_urls"] = list(index_urls)
    if metrics_listen is not None:
        section["metrics_listen"] = metrics_listen
    if storage_root is not None:
        section["storage_root"] = storage_root
    if events_url is not None:
        section["events_url"] = events_url
    _setup("router", cfg)
    metrics = Metrics("router")
    if section["metrics_listen"]:
        # The public port must not expose metrics, so they get their own listener.
        host, port = parse_listen(section["metrics_listen"])
        start_http_server(port, host, registry=metrics.registry)
    if section["storage_root"]:
        from services.router.shared_disk import SharedDisk

        SharedDisk(section["storage_root"]).install_spool()
    app = create_app(cfg, metrics=metrics, start_background=True)
    serve_app(app, section["listen"], cfg, section["threads"], "router")


@main.command()
@config_option
@click.option("--redis-url", help="Redis URL of the index (index.redis.url).")
@click.option("--consumer", help="This dispatcher's consumer name; default host-pid. A "
              "stable name resumes its own unfinished events at once after a restart.")
@click.option("--metrics-listen", help="host:port for /metrics "
              "(notifications.metrics_listen).")
def notifications(config_path: str | None, redis_url: str | None, consumer: str | None,
                  metrics_listen: str | None) -> None:
    """Run one webhook dispatcher; any number may run (docs/webhooks.md)."""
    from prometheus_client import start_http_server

    from services.index.app import DEFAULT_REDIS_URL
    from services.notifications.dispatcher import Dispatcher, default_consumer
    from shared.config import parse_listen

    cfg = _load(config_path)
    section = cfg["notifications"]
    if metrics_listen is not None:
        section["metrics_listen"] = metrics_listen
    _setup("notifications", cfg)
    if not section["endpoints"]:
        raise click.ClickException("configuration error: notifications.endpoints is empty: "
                                   "there is nothing to deliver to")
    dispatcher = Dispatcher(cfg, redis_url or cfg["index"]["redis"]["url"] or DEFAULT_REDIS_URL,
                            consumer or default_consumer())
    if section["metrics_listen"]:
        host, port = parse_listen(section["metrics_listen"])
        start_http_server(port, host, registry=dispatcher.metrics.registry)
    sys.exit(dispatcher.run_forever())


@main.group(name="events")
def events_group() -> None:
    """Webhook queues: state per endpoint, replay of dead letters."""


def _events_redis(config_path: str | None, redis_url: str | None) -> tuple[Any, Any]:
    import redis

    from services.index.app import DEFAULT_REDIS_URL

    cfg = _load(config_path)
    client = redis.Redis.from_url(redis_url or cfg["index"]["redis"]["url"]
                                  or DEFAULT_REDIS_URL, socket_timeout=10,
                                  socket_connect_timeout=2)
    return cfg, client


redis_url_option = click.option("--redis-url", help="Redis URL of the index "
                                "(index.redis.url).")


@events_group.command(name="status")
@config_option
@redis_url_option
def events_status(config_path: str | None, redis_url: str | None) -> None:
    """Show, per endpoint, what is queued, in flight and dead-lettered."""
    import redis

    from services.notifications import admin

    cfg, client = _events_redis(config_path, redis_url)
    try:
        rows = admin.status(client, cfg)
        click.echo(f"stream: {admin.stream_length(client, cfg)} events retained")
    except redis.exceptions.RedisError as e:
        raise click.ClickException(f"redis unavailable: {e}") from None
    click.echo(f"{'endpoint':<24} {'queued':>8} {'pending':>8} {'lag':>8} {'dead':>8} "
               f"{'consumers':>9}  last delivered")
    for r in rows:
        name = r["endpoint"] + ("" if r["configured"] else " (not configured)")
        click.echo(f"{name:<24} {r['pending'] + r['lag']:>8} {r['pending']:>8} {r['lag']:>8} "
                   f"{r['dead_letters']:>8} {r['consumers']:>9}  {r['last_delivered_id']}")


@events_group.command(name="replay")
@config_option
@redis_url_option
@click.argument("endpoint")
@click.option("--limit", type=int, help="Replay at most this many, oldest first.")
def events_replay(config_path: str | None, redis_url: str | None, endpoint: str,
                  limit: int | None) -> None:
    """Queue ENDPOINT's dead-lettered events again, for ENDPOINT only."""
    import redis

    from services.notifications import admin

    cfg, client = _events_redis(config_path, redis_url)
    if endpoint not in [e["name"] for e in cfg["notifications"]["endpoints"]]:
        raise click.ClickException(f"no endpoint named {endpoint!r} in "
                                   "notifications.endpoints")
    try:
        moved = admin.replay(client, cfg, endpoint, limit)
    except redis.exceptions.RedisError as e:
        raise click.ClickException(f"redis unavailable: {e}") from None
    click.echo(f"replayed {moved} dead-lettered events to {endpoint}")


@main.group(name="config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command()
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE and print the effective configuration."""
    cfg = _load(file)
    click.echo(config_mod.dump(cfg), nl=False)


@config_group.command(name="reference")
def reference() -> None:
    """Print every key with its environment variable and default."""
    for path, env, default, help_ in config_mod.reference():
        click.echo(f"{path}\t{env}\t{default!r}\t{help_}")


if __name__ == "__main__":
    main()
