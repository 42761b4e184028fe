"""Configuration: one YAML file, environment overrides, validated against one schema.

Precedence, lowest first: the defaults below, the YAML file, then an
environment variable per key named ``DOCKYARD_<SECTION>_<KEY>`` (nested keys
joined with ``_``, e.g. ``DOCKYARD_INDEX_REDIS_URL``). A string value of the
form ``_env:NAME`` or ``_env:NAME:default`` is read from the environment, the
syntax of the legacy Python docker-registry, for people migrating from it.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared import notify_config
from shared.redis_source import from_url as redis_source_from_url
from shared.redis_source import parse_address as parse_redis_address


class ConfigError(ValueError):
    """A configuration problem; the message names the key's full path."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None
    # A list of mappings (rules, issuers) instead of strings, checked by `check`.
    items: type = str
    # A key that checks and completes its own value (webhook endpoints):
    # check(path, value, environ) returns the normalized value.
    check: Callable[[str, Any, dict[str, str]], Any] | None = None


_LISTEN_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})")
_URL_RE = re.compile(r"(?:redis|rediss|unix|redis\+sentinel)://\S*")

# section -> key -> Key; a nested dict is a nested section.
SCHEMA: dict[str, Any] = {
    "log": {
        "level": Key(str, "info", "log level", choices=("debug", "info", "warning", "error")),
        "format": Key(str, "text", "text or json lines", choices=("text", "json")),
        "access": Key(bool, True, "log one line per request"),
    },
    "http": {
        "max_header_size": Key(int, 65536, "largest request header block, bytes", minimum=1024),
        "idle_timeout": Key(int, 120, "seconds before an idle or stalled connection is closed",
                            minimum=1),
        "connection_limit": Key(int, 1000, "open connections per process", minimum=1),
        "backlog": Key(int, 1024, "listen backlog", minimum=1),
        "queue_timeout": Key(int, 5, "seconds a request may wait for a worker thread; while "
                             "the oldest has waited longer, new requests get 503 with "
                             "Retry-After at once; 0: no limit", minimum=0),
        "drain_timeout": Key(float, 30.0, "on SIGTERM, seconds to finish the requests in "
                             "flight after the listener closes; 0: exit at once"),
    },
    "discovery": {
        "interval": Key(float, 5.0, "seconds between lookups of the backend URLs' names; "
                        "every address a name resolves to is a backend (a headless "
                        "service, compose --scale); 0: resolve once at start"),
        "health_interval": Key(float, 2.0, "seconds between /readyz checks of each backend; "
                               "a failing one is tried last until it passes; 0: off"),
    },
    "router": {
        "listen": Key(str, "127.0.0.1:5000", "public address of the registry, host:port"),
        "storage_urls": Key(list, ["http://127.0.0.1:5100"], "storage backends"),
        "index_urls": Key(list, ["http://127.0.0.1:5200"], "index backends"),
        "threads": Key(int, 16, "worker threads", minimum=1),
        "processes": Key(int, 0, "router processes `serve` runs on the public port, sharing "
                         "one listening socket; 0: one per CPU", minimum=0),
        "backend_timeout": Key(int, 300, "seconds to wait for a backend's response", minimum=1),
        "retry_after": Key(int, 2, "Retry-After seconds sent with 503", minimum=0),
        "metrics_listen": Key(str, "", "host:port for the router's /metrics; empty: off"),
        "storage_root": Key(str, "", "the storage root, when this router's machine shares "
                            "it: blob bodies are then sent from disk by the router itself "
                            "instead of streamed through storage; empty: off"),
        "events_url": Key(str, "", "redis:// or redis+sentinel:// URL of the index's Redis, "
                          "for the events that "
                          "invalidate cached answers; empty: no response cache"),
        "cache_ttl": Key(float, 60.0, "seconds a manifest, tags list, referrers list, catalog "
                         "page or search answer is served from the router's cache, while "
                         "index events keep it honest; 0: off"),
        "cache_max_bytes": Key(int, 64 * 1024 * 1024, "memory for the router's response "
                               "cache, bytes; one answer may take a sixteenth", minimum=0),
        "trusted_proxy": Key(str, "", "address of the TLS terminator or load balancer in "
                             "front of the router, whose X-Forwarded-For/Proto are believed "
                             "(`serve` with TLS sets it); empty: none"),
    },
    "storage": {
        "listen": Key(str, "127.0.0.1:5100", "internal address, host:port"),
        "root": Key(str, "./dockyard-data/storage", "directory of blobs, links and "
                    "uploads; with storage.backend s3 only this replica's scratch (tmp/) "
                    "and cached usage (gc/)"),
        "index_urls": Key(list, ["http://127.0.0.1:5200"], "index services to record manifests"),
        "delete_enabled": Key(bool, True, "allow DELETE of blobs and manifests"),
        "upload_max_age": Key(int, 86400, "seconds before an abandoned upload is purged",
                              minimum=60),
        "upload_purge_interval": Key(int, 3600, "seconds between purges of old uploads",
                                     minimum=1),
        "max_uploads_per_repository": Key(int, 1000, "concurrent upload sessions per repository",
                                          minimum=1),
        "manifest_max_size": Key(int, 4 * 1024 * 1024, "largest manifest, bytes", minimum=1024),
        "threads": Key(int, 16, "worker threads", minimum=1),
        "tag_cache_ttl": Key(float, 60.0, "seconds a resolved tag is served without asking "
                             "the index, while index events keep the cache honest; 0: off"),
        "events_url": Key(str, "", "redis:// or redis+sentinel:// URL of the index's Redis, "
                          "for the events that "
                          "invalidate cached tags; empty: no fresh cache hits"),
        "stale_if_error": Key(int, 300, "seconds a resolved tag may be served while the index "
                              "is unreachable", minimum=0),
        "rpc_timeout": Key(float, 5.0, "seconds per call to the index"),
        "backend": Key(str, "filesystem", "where blobs, links and upload sessions live: "
                       "`filesystem` (under storage.root) or `s3` (an S3-compatible object "
                       "store, storage.s3; docs/object-storage.md)",
                       choices=("filesystem", "s3")),
        "s3": {
            "endpoint": Key(str, "", "URL of the S3 API, e.g. http://127.0.0.1:8333; "
                            "empty: AWS's own endpoint for the region"),
            "region": Key(str, "us-east-1", "region the requests are signed for"),
            "bucket": Key(str, "", "bucket that holds everything; required with backend s3"),
            "prefix": Key(str, "", "key prefix inside the bucket, so several registries may "
                          "share one; empty: the bucket's root"),
            "access_key": Key(str, "", "access key id; `_env:NAME` reads it from the "
                              "environment; empty: boto3's usual lookup (environment, "
                              "instance role)"),
            "secret_key": Key(str, "", "secret access key; `_env:NAME` reads it from the "
                              "environment"),
            "path_style": Key(bool, True, "path-style addressing (http://host/bucket/key), "
                              "as most self-hosted stores need; false: virtual hosts"),
            "verify_tls": Key(bool, True, "verify the object store's TLS certificate"),
            "part_size": Key(int, 8 * 1024 * 1024, "bytes per multipart part; smaller "
                             "chunks are buffered in the bucket until a part fills",
                             minimum=5 * 1024 * 1024),
            "redirect": Key(bool, False, "answer blob GETs with 307 to a presigned URL of "
                            "the object store instead of streaming the bytes"),
            "timeout": Key(float, 10.0, "seconds to connect and to wait for each read of "
                           "one call to the object store, before the client gets 503"),
            "create_bucket": Key(bool, False, "create the bucket at start when it is "
                                 "missing"),
        },
    },
    "index": {
        "listen": Key(str, "127.0.0.1:5200", "internal address, host:port"),
        "threads": Key(int, 8, "worker threads", minimum=1),
        "redis": {
            "url": Key(str, "", "redis URL; empty under `dockyard serve` starts a private "
                       "redis-server, and means redis://127.0.0.1:6379/0 otherwise"),
            "sentinels": Key(list, [], "host:port of each Redis Sentinel; when set, the "
                             "primary is found through them and url is not used"),
            "master_name": Key(str, "dockyard", "the name the sentinels monitor the primary "
                               "under"),
            "password": Key(str, "", "password of the Redis servers (AUTH); `_env:NAME` "
                            "reads it from the environment"),
            "sentinel_password": Key(str, "", "password of the sentinels themselves, when "
                                     "they require one"),
            "db": Key(int, 0, "database number, with sentinels", minimum=0),
            "min_replicas_ack": Key(int, 0, "replicas that must confirm each index write "
                                    "(WAIT) before it is acknowledged; 0: the primary alone",
                                    minimum=0),
            "replica_ack_timeout": Key(float, 1.0, "seconds to wait for those confirmations "
                                       "before the write fails with 503"),
            "key_prefix": Key(str, "dockyard:", "prefix of every key"),
            "appendfsync": Key(str, "always", "AOF fsync policy of the private redis-server",
                               choices=("always", "everysec", "no")),
        },
        "search_refresh": Key(float, 1.0, "seconds between rebuilds of the search snapshot "
                              "of a large catalog"),
    },
    "gc": {
        "interval": Key(int, 86400, "seconds between the garbage collections a storage "
                        "process runs in the background (one at a time per storage root); "
                        "0: only `dockyard gc`", minimum=0),
        "grace": Key(int, 3600, "seconds a blob, link or manifest must be left untouched "
                     "before a collection may delete it, so pushes in progress finish",
                     minimum=0),
        "untagged_max_age": Key(int, -1, "seconds after its last push that a manifest no "
                                "tag, index or subject chain reaches is deleted; -1: kept",
                                minimum=-1),
        "retention": Key(list, [], "retention policies, each '<repository glob> "
                         "[keep_last=N] [max_age=30d] [keep=v*,release-*]'; the first "
                         "matching one applies (docs/garbage-collection.md)"),
        "redis_url": Key(str, "", "redis URL of the index for the collector (and, with "
                         "storage.backend s3, for storage's collector fences); empty: "
                         "index.redis.url, else storage.events_url"),
        "usage_max_age": Key(int, 300, "seconds the usage endpoint serves a computed "
                             "answer before computing it again", minimum=0),
    },
    # Who may do what: see docs/access-control.md. Nothing here: no authentication.
    "auth": {
        "htpasswd": Key(str, "", "htpasswd file of users (bcrypt entries, `htpasswd -B` or "
                        "`dockyard passwd`); re-read when it changes; empty: no users"),
        "mode": Key(str, "token", "the challenge sent with 401: `token` (Docker token "
                    "authentication via the token endpoint) or `basic`; both schemes are "
                    "accepted either way", choices=("token", "basic")),
        "realm": Key(str, "dockyard", "the Basic challenge's realm"),
        "groups": Key(dict, {}, "group name -> list of user names, for `access` rules"),
        "credential_cache_ttl": Key(float, 300.0, "seconds a verified password (by its "
                                    "hash) is trusted without another bcrypt check; an "
                                    "edit of the htpasswd file drops them all; 0: never"),
        "credential_cache_size": Key(int, 10000, "verified credentials and tokens kept",
                                     minimum=1),
        "failed_login_limit": Key(int, 10, "failed logins per user, and per client address, "
                                  "before 429", minimum=1),
        "failed_login_window": Key(int, 60, "seconds over which failed logins are counted, "
                                   "and the longest Retry-After", minimum=1),
        "token": {
            "realm": Key(str, "", "URL of the token endpoint sent in the challenge; empty: "
                         "/auth/token on the host the client used"),
            "service": Key(str, "dockyard", "the service (audience) of issued tokens"),
            "issuer": Key(str, "dockyard", "the issuer of issued tokens"),
            "key": Key(str, "", "PEM private key (EC P-256: ES256, RSA: RS256) that signs "
                       "tokens and upload URLs; empty under `dockyard serve`: generated "
                       "in the data directory"),
            "lifetime": Key(int, 300, "seconds an issued access token is valid", minimum=10),
            "refresh_lifetime": Key(int, 7 * 86400, "seconds a refresh token (grant_type="
                                    "password with access_type=offline) is valid",
                                    minimum=60),
        },
        "external": Key(list, [], "tokens of other issuers accepted: a list of {issuer, "
                        "audience, keys: PEM file of public keys or certificates, or a JWKS "
                        "file}", items=dict),
    },
    "access": Key(list, [], "rules: a list of {repositories: [glob], users, groups, "
                  "anonymous: [actions], actions: [pull|push|delete]}; once any "
                  "authentication is configured, what no rule grants is denied",
                  items=dict),
    # Pull-through cache: repositories that mirror other registries (docs/pull-through-cache.md).
    "proxy": {
        "upstreams": Key(list, [], "upstream registries: a list of {prefix, url, username, "
                         "password, tag_ttl, max_age, docker_hub, ca_certs}; prefix \"\" "
                         "makes the whole registry a mirror", items=dict),
        "timeout": Key(float, 30.0, "seconds to connect to an upstream, and to wait for each "
                       "read from it, before it counts as down"),
        "eviction_interval": Key(int, 3600, "seconds between passes that evict cached "
                                 "manifests not pulled within their upstream's max_age",
                                 minimum=1),
    },
    # Service-to-service authentication (shared/service_auth.py).
    "internal": {
        "secret": Key(str, "", "shared secret that signs every call into storage and the "
                      "index; the same in every dockyard process (e.g. _env:DOCKYARD_SECRET); "
                      "empty: read internal.secret_file"),
        "secret_file": Key(str, "", "file holding the shared secret; `serve` generates "
                           "<data dir>/internal-secret when neither key is set"),
        "max_clock_skew": Key(float, 30.0, "seconds a signed call's timestamp may differ "
                              "from the receiver's clock; also the replay window"),
        "also_accept": Key(list, [], "further secrets whose signatures are accepted (never "
                           "used to sign), for changing the secret without a refused call"),
    },
    # HTTPS on the public endpoint, terminated by haproxy under `serve` (services/tls.py).
    "tls": {
        "cert": Key(str, "", "PEM certificate chain of the public endpoint; empty: plain "
                    "HTTP"),
        "key": Key(str, "", "PEM private key of tls.cert"),
        "client_ca": Key(str, "", "PEM CA bundle: when set, clients must present a "
                         "certificate it signed (mutual TLS)"),
        "reload_interval": Key(float, 5.0, "seconds between checks for a renewed certificate, "
                               "which is then served without a restart"),
        "haproxy": Key(str, "haproxy", "the haproxy binary that terminates TLS"),
    },
    # Webhooks (docs/webhooks.md). With no endpoint nothing is recorded or sent.
    "notifications": {
        "endpoints": Key(list, [], "webhook endpoints: a list of mappings with name, url, "
                         "headers, timeout, secret, backoff_initial, backoff_max, max_age, "
                         "batch_size, actions, repositories, ignored_media_types "
                         "(docs/webhooks.md)", items=dict, check=notify_config.check_endpoints),
        "manifest_pull": Key(bool, False, "record an event for every manifest GET (the "
                             "router then never answers a manifest from its cache)"),
        "blob_push": Key(bool, False, "record events for blob uploads, mounts and deletes"),
        "blob_pull": Key(bool, False, "record an event for every blob GET"),
        "claim_idle": Key(float, 30.0, "seconds after which a dispatcher takes over the "
                          "in-flight events of another that stopped answering"),
        "metrics_listen": Key(str, "", "host:port for the dispatcher's /metrics; empty: off"),
    },
}


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default)
        for k, v in schema.items()
    }


def _leaves(schema: dict[str, Any], prefix: tuple[str, ...] = ()):
    for k, v in schema.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def env_name(path: tuple[str, ...]) -> str:
    return "DOCKYARD_" + "_".join(p.upper() for p in path)


def _yaml_value(raw: str, where: str) -> Any:
    """A value given as text (an environment variable, an `_env:` default), read as YAML."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: not a valid YAML value: {raw[:100]!r}") from None


def _expand_legacy_env(value: Any, environ: dict[str, str], where: str, key: Key) -> Any:
    """`_env:NAME[:default]`: the variable's text, read as YAML for a typed key but
    taken as it is for a string one, so a secret such as ``0123``, ``yes`` or
    ``*x`` is never changed or refused."""
    if isinstance(value, str) and value.startswith("_env:"):
        name, _, default = value[len("_env:"):].partition(":")
        raw = environ.get(name, default)
        if key.type is str:
            return raw
        return _yaml_value(raw, where) if raw != "" else ""
    return value


def _coerce(path: str, key: Key, value: Any, environ: dict[str, str]) -> Any:
    expected = key.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if expected is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if value is None or not isinstance(value, expected) or (
        expected is int and isinstance(value, bool)
    ):
        raise ConfigError(
            f"{path}: expected {_type_name(expected)}, got {type(value).__name__}"
        )
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{path}: must be one of {', '.join(map(str, key.choices))}")
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{path}: must be at least {key.minimum}")
    if key.check is not None:
        try:
            return key.check(path, value, environ)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if expected is list and key.items is str and not all(isinstance(v, str) and v
                                                         for v in value):
        raise ConfigError(f"{path}: expected a list of non-empty strings")
    if expected is list and key.items is dict and not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: expected a list of mappings")
    return value


def _type_name(t: Any) -> str:
    return {str: "string", int: "integer", float: "number", bool: "boolean",
            list: "list", dict: "mapping"}.get(t, str(t))


def _check_values(cfg: dict[str, Any]) -> None:
    """Checks of meaning beyond type: addresses, URLs."""
    for path in (("router", "listen"), ("storage", "listen"), ("index", "listen")):
        value = cfg[path[0]][path[1]]
        if not _valid_listen(value):
            raise ConfigError(f"{'.'.join(path)}: expected host:port, got {value!r}")
    if bool(cfg["tls"]["cert"]) != bool(cfg["tls"]["key"]):
        missing, given = ("key", "cert") if cfg["tls"]["cert"] else ("cert", "key")
        raise ConfigError(f"tls.{missing}: must be set with tls.{given}")
    if cfg["tls"]["client_ca"] and not cfg["tls"]["cert"]:
        raise ConfigError("tls.client_ca: needs tls.cert and tls.key")
    if cfg["router"]["metrics_listen"] and not _valid_listen(cfg["router"]["metrics_listen"]):
        raise ConfigError("router.metrics_listen: expected host:port or empty")
    for path in (("router", "storage_urls"), ("router", "index_urls"), ("storage", "index_urls")):
        for url in cfg[path[0]][path[1]]:
            if not re.fullmatch(r"https?://[^/\s]+/?", url):
                raise ConfigError(f"{'.'.join(path)}: not an http URL: {url!r}")
    for section, path in ((cfg["index"]["redis"], "index.redis.url"),
                          (cfg["router"], "router.events_url"),
                          (cfg["storage"], "storage.events_url"),
                          (cfg["gc"], "gc.redis_url")):
        url = section[path.rpartition(".")[2]]
        if url and not _URL_RE.fullmatch(url):
            raise ConfigError(f"{path}: not a redis URL: {url!r}")
        if url and url.startswith("redis+sentinel://"):
            try:
                redis_source_from_url(url)
            except ValueError as e:
                raise ConfigError(f"{path}: {e}") from None
    for address in cfg["index"]["redis"]["sentinels"]:
        try:
            parse_redis_address(address)
        except ValueError:
            raise ConfigError(f"index.redis.sentinels: expected host:port, got {address!r}"
                              ) from None
    if cfg["notifications"]["metrics_listen"] and not _valid_listen(
            cfg["notifications"]["metrics_listen"]):
        raise ConfigError("notifications.metrics_listen: expected host:port or empty")
    try:
        notify_config.check_section(cfg["notifications"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_storage_backend(cfg)
    # The rules' shapes, so that `dockyard config check` finds a typo, not the router.
    from services.storage.proxy import settings as proxy_settings
    from shared.auth import settings

    try:
        settings.check(cfg)
        proxy_settings.check(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_storage_backend(cfg: dict[str, Any]) -> None:
    """What an object store needs (docs/object-storage.md)."""
    if cfg["storage"]["backend"] != "s3":
        return
    s3 = cfg["storage"]["s3"]
    if not s3["bucket"]:
        raise ConfigError("storage.s3.bucket: required with storage.backend s3")
    if s3["endpoint"] and not re.fullmatch(r"https?://[^/\s]+/?", s3["endpoint"]):
        raise ConfigError(f"storage.s3.endpoint: not an http URL: {s3['endpoint']!r}")
    if bool(s3["access_key"]) != bool(s3["secret_key"]):
        missing = "secret_key" if s3["access_key"] else "access_key"
        raise ConfigError(f"storage.s3.{missing}: must be set with the other credential")
    if s3["timeout"] <= 0:
        raise ConfigError("storage.s3.timeout: must be more than 0")
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        raise ConfigError("storage.backend: s3 needs boto3, which is not installed "
                          "(pip install 'dockyard[s3]')")


def _valid_listen(value: str) -> bool:
    m = _LISTEN_RE.fullmatch(value)
    return m is not None and 0 <= int(m.group(2)) <= 65535


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _merge(schema: dict[str, Any], target: dict[str, Any], data: Any, prefix: str,
           environ: dict[str, str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '(top level)'}: expected a mapping")
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        spec = schema.get(k)
        if spec is None:
            raise ConfigError(f"{path}: unknown key")
        if isinstance(spec, dict):
            _merge(spec, target[k], v if v is not None else {}, path, environ)
        else:
            target[k] = _coerce(path, spec, _expand_legacy_env(v, environ, path, spec),
                                environ)


def load(path: str | os.PathLike[str] | None = None,
         environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the effective configuration: defaults, then the file, then the environment."""
    environ = dict(os.environ if environ is None else environ)
    cfg = _defaults(SCHEMA)
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if data is not None:
            _merge(SCHEMA, cfg, data, "", environ)
    for keypath, spec in _leaves(SCHEMA):
        raw = environ.get(env_name(keypath))
        if raw is None:
            continue
        where = f"{'.'.join(keypath)} (from {env_name(keypath)})"
        # A string key takes the text as it is: read as YAML, "dockyard:" would
        # be a mapping and "on" a boolean.
        if spec.type is str:
            value: Any = raw
        else:
            value = _yaml_value(raw, where) if raw.strip() else ""
        section = cfg
        for part in keypath[:-1]:
            section = section[part]
        section[keypath[-1]] = _coerce(
            where, spec, _expand_legacy_env(value, environ, where, spec), environ)
    _check_values(cfg)
    return cfg


# Keys whose values are secrets, and keys holding a Redis URL that may carry a password.
_SECRET_KEYS = (("internal", "secret"), ("internal", "also_accept"),
                ("index", "redis", "password"), ("index", "redis", "sentinel_password"),
                ("storage", "s3", "access_key"), ("storage", "s3", "secret_key"))
_URL_KEYS = (("index", "redis", "url"), ("router", "events_url"), ("storage", "events_url"),
             ("gc", "redis_url"))


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return notify_config.REDACTED
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}{notify_config.REDACTED}@{host}"))


def dump(cfg: dict[str, Any], *, reveal_secrets: bool = False) -> str:
    """`cfg` as YAML. For people (`dockyard config check`, which CI logs keep) every
    secret is shown as ``<redacted>``: the internal secret, Redis passwords (also
    inside URLs), webhook secrets and header values. `reveal_secrets` gives the
    exact configuration, for a child process that must run with it."""
    if reveal_secrets:
        return yaml.safe_dump(cfg, sort_keys=False)
    shown = copy.deepcopy(cfg)
    shown["notifications"]["endpoints"] = notify_config.redacted(
        cfg["notifications"]["endpoints"])
    for path in _SECRET_KEYS:
        *parents, leaf = path
        section = shown
        for name in parents:
            section = section[name]
        if section[leaf]:
            section[leaf] = ([notify_config.REDACTED] * len(section[leaf])
                             if isinstance(section[leaf], list) else notify_config.REDACTED)
    for path in _URL_KEYS:
        *parents, leaf = path
        section = shown
        for name in parents:
            section = section[name]
        if section[leaf]:
            section[leaf] = _without_password(section[leaf])
    return yaml.safe_dump(shown, sort_keys=False)


def reference() -> list[tuple[str, str, Any, str]]:
    """(key path, environment variable, default, help) of every key, for the docs."""
    return [(".".join(p), env_name(p), k.default, k.help) for p, k in _leaves(SCHEMA)]


def _markdown_value(value: Any) -> str:
    if value == "" or value == []:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(value) + "]`"
    return f"`{value}`"


def reference_markdown() -> str:
    """`reference()` as the Markdown table of docs/configuration.md, which a test keeps
    equal to this (regenerate it with ``scripts/config-docs``)."""
    rows = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for path, env, default, help_ in reference():
        meaning = help_.replace("|", "\\|")
        rows.append(f"| `{path}` | `{env}` | {_markdown_value(default)} | {meaning} |")
    return "\n".join(rows) + "\n"
