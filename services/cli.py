"""The `dockyard` command: run everything, run one service, or check a config file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from shared import config as config_mod
from shared.logs import setup_logging

# `serve` hands its children the Redis URL in this variable, never on their
# command lines: a URL may carry the password, and every local user can read
# a process's arguments (ps, /proc/<pid>/cmdline).
CHILD_REDIS_URL = "DOCKYARD_CHILD_REDIS_URL"

log = logging.getLogger("dockyard")


def _load(path: str | None) -> dict[str, Any]:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        raise click.ClickException(f"configuration error: {e}") from None


def _create(factory: Any, *args: Any, **kwargs: Any) -> Any:
    """An app from its factory; a configuration problem found there ends the command."""
    try:
        return factory(*args, **kwargs)
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
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True),
              help="Serve HTTPS with this PEM certificate chain (tls.cert).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True),
              help="The certificate's PEM private key (tls.key).")
def serve(config_path: str | None, host: str, port: int, data_dir: str,
          tls_cert: str | None, tls_key: str | None) -> None:
    """Run the whole registry on one machine: router, storage, index and Redis."""
    from services import exposure, supervisor

    cfg = _load(config_path)
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise click.ClickException("--tls-cert and --tls-key go together")
        cfg["tls"]["cert"], cfg["tls"]["key"] = tls_cert, tls_key
    _setup("serve", cfg)
    exposure.warn(cfg, host)
    try:
        children, addresses = supervisor.plan(cfg, config_path, host, port,
                                              Path(data_dir).resolve())
    except (FileNotFoundError, config_mod.ConfigError) as e:
        raise click.ClickException(str(e)) from None
    except supervisor.ListenError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # ssl.SSLError is one
        raise click.ClickException(f"TLS certificate and key: {e}") from None
    for name, address in addresses.items():
        log.info("%s: %s", name, address)
    from services.gc.serve_file import write_serve_file

    write_serve_file(Path(data_dir).resolve(), addresses, children_root(children),
                     config_path, cfg["storage"]["backend"])
    sys.exit(supervisor.run(children, cfg["http"]["drain_timeout"]))


def children_root(children: list[Any]) -> str:
    """The storage root `serve` gave its storage child (its --root)."""
    for child in children:
        if "--root" in child.argv:
            return child.argv[child.argv.index("--root") + 1]
    return ""


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (storage.listen).")
@click.option("--root", help="Storage root directory (storage.root).")
@click.option("--index", "index_urls", multiple=True, help="Index service URL; repeatable.")
@click.option("--events-url", envvar=CHILD_REDIS_URL,
              help="Redis URL for index events (storage.events_url).")
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
    app = _create(create_app, cfg, start_background=True)
    serve_app(app, section["listen"], cfg, section["threads"], "storage")


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (index.listen).")
@click.option("--redis-url", envvar=CHILD_REDIS_URL, help="Redis URL (index.redis.url).")
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
    app = _create(create_app, cfg, start_background=True)
    serve_app(app, section["listen"], cfg, section["threads"], "index")


@main.command()
@config_option
@click.option("--listen", help="host:port to listen on (router.listen).")
@click.option("--storage", "storage_urls", multiple=True, help="Storage URL; repeatable.")
@click.option("--index", "index_urls", multiple=True, help="Index URL; repeatable.")
@click.option("--metrics-listen", help="host:port for /metrics (router.metrics_listen).")
@click.option("--storage-root", help="Shared storage root to send blobs from "
              "(router.storage_root).")
@click.option("--events-url", envvar=CHILD_REDIS_URL,
              help="Redis URL for index events (router.events_url).")
@click.option("--listen-fd", help="Serve on these inherited listening sockets (comma-"
              "separated descriptors) instead of binding --listen; set by `serve`.")
@click.option("--write-fence", help="File the router processes of one `serve` share to "
              "read their own writes from each other; set by `serve`.")
@click.option("--metrics-fd", type=int, help="Serve /metrics on this inherited listening "
              "socket, adding up every router process's samples; set by `serve`.")
@click.option("--token-key", type=click.Path(dir_okay=False),
              help="PEM key that signs tokens and upload URLs (auth.token.key).")
@click.option("--trusted-proxy", help="Address of a TLS terminator in front whose "
              "X-Forwarded-For/Proto are believed (router.trusted_proxy).")
def router(config_path: str | None, listen: str | None, storage_urls: tuple[str, ...],
           index_urls: tuple[str, ...], metrics_listen: str | None,
           storage_root: str | None, events_url: str | None, listen_fd: str | None,
           write_fence: str | None, metrics_fd: int | None, token_key: str | None,
           trusted_proxy: str | None) -> None:
    """Run one router: the public endpoint."""
    import socket

    from prometheus_client import start_http_server

    from services.router.app import create_app
    from shared.config import parse_listen
    from shared.observability import Metrics, serve_multiprocess_metrics
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
    if token_key:
        cfg["auth"]["token"]["key"] = token_key
    if trusted_proxy is not None:
        section["trusted_proxy"] = trusted_proxy
    _setup("router", cfg)
    metrics = Metrics("router")
    if metrics_fd is not None:
        serve_multiprocess_metrics(socket.socket(fileno=metrics_fd))
    elif section["metrics_listen"]:
        # The public port must not expose metrics, so they get their own listener.
        host, port = parse_listen(section["metrics_listen"])
        start_http_server(port, host, registry=metrics.registry)
    if section["storage_root"]:
        from services.router.shared_disk import SharedDisk

        SharedDisk(section["storage_root"]).install_spool()
    if write_fence:
        from services.router.response_cache import use_write_fence

        use_write_fence(write_fence)
    app = _create(create_app, cfg, metrics=metrics, start_background=True)
    if section["trusted_proxy"]:
        from waitress.proxy_headers import proxy_headers_middleware

        # The client's address and scheme, as the terminator in front saw them.
        app = proxy_headers_middleware(
            app, trusted_proxy=section["trusted_proxy"], trusted_proxy_count=1,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"})
    sockets = [socket.socket(fileno=int(fd)) for fd in listen_fd.split(",")] if listen_fd else []
    serve_app(app, section["listen"], cfg, section["threads"], "router", sockets)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("user")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input instead of a prompt.")
def passwd(file: str, user: str, password_stdin: bool) -> None:
    """Add USER to the htpasswd FILE, or change their password (bcrypt).

    The password is never taken from the command line, where other users
    and the shell history would see it. A running registry picks the change
    up within a second.
    """
    from shared.auth.htpasswd import set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("the password must not be empty")
    try:
        new = set_password(file, user, password)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{file}: {e.strerror}") from None
    click.echo(f"{'added' if new else 'changed'} user {user} in {file}")


@main.command()
@config_option
@click.option("--redis-url", envvar=CHILD_REDIS_URL,
              help="Redis URL of the index (index.redis.url).")
@click.option("--consumer", help="This dispatcher's consumer name; default host-pid. A "
              "stable name resumes its own unfinished events at once after a restart.")
@click.option("--metrics-listen", help="host:port for /metrics "
              "(notifications.metrics_listen).")
def notifications(config_path: str | None, redis_url: str | None, consumer: str | None,
                  metrics_listen: str | None) -> None:
    """Run one webhook dispatcher; any number may run (docs/webhooks.md)."""
    from prometheus_client import start_http_server

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
    if redis_url:
        cfg["index"]["redis"]["url"] = redis_url
    dispatcher = Dispatcher(cfg, consumer or default_consumer())
    if section["metrics_listen"]:
        host, port = parse_listen(section["metrics_listen"])
        start_http_server(port, host, registry=dispatcher.metrics.registry)
    sys.exit(dispatcher.run_forever())


@main.group(name="events")
def events_group() -> None:
    """Webhook queues: state per endpoint, replay of dead letters."""


def _events_redis(config_path: str | None, redis_url: str | None) -> tuple[Any, Any]:
    from services.notifications.dispatcher import redis_client

    cfg = _load(config_path)
    if redis_url:
        cfg["index"]["redis"]["url"] = redis_url
    return cfg, redis_client(cfg["index"]["redis"])


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
@click.option("--markdown", is_flag=True,
              help="The table of docs/configuration.md (see scripts/config-docs).")
def reference(markdown: bool) -> None:
    """Print every key with its environment variable and default."""
    if markdown:
        click.echo(config_mod.reference_markdown(), nl=False)
        return
    for path, env, default, help_ in config_mod.reference():
        click.echo(f"{path}\t{env}\t{default!r}\t{help_}")


def _add_space_commands() -> None:
    from services.gc import commands

    main.add_command(commands.gc_command)
    main.add_command(commands.repo_group)
    main.add_command(commands.usage_command)
    main.add_command(commands.fsck_command)


_add_space_commands()

if __name__ == "__main__":
    main()
