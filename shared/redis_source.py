"""Where a Redis source points, read from configuration, without importing redis-py.

The forms a source takes (a URL, a ``redis+sentinel://`` URL, or the Sentinel
keys of ``index.redis``) are described in `shared.redis_client`, which builds the
clients. This half is apart because the configuration loader and the
supervisor only parse and pass on sources: importing redis-py costs each
process about 19 MiB of RSS, and processes that never talk to Redis should not
pay it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisSource:
    url: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    password: str = field(default="", repr=False)
    sentinel_password: str = field(default="", repr=False)
    db: int = 0

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> str:
        """For logs: where the source points, without passwords."""
        if self.uses_sentinel:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {hosts} master {self.master_name!r} db {self.db}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}{parts.path}"


def parse_address(text: str, default_port: int = DEFAULT_SENTINEL_PORT) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[v6]:port`` as a (host, port) pair."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    number = int(port) if port else default_port
    if not 0 < number < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, number


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def from_url(url: str) -> RedisSource:
    """A source from a URL; ``redis+sentinel://`` URLs name a Sentinel setup."""
    url = url or DEFAULT_URL
    if not is_sentinel_url(url):
        return RedisSource(url=url)
    rest = url[len(SENTINEL_SCHEME) + 3:]
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    password = ""
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        password = unquote(credentials.partition(":")[2] if ":" in credentials
                           else credentials)
    sentinels = tuple(parse_address(a) for a in netloc.split(",") if a.strip())
    parts = [p for p in path.split("/") if p]
    if not sentinels or not parts or len(parts) > 2:
        raise ValueError("a sentinel URL is redis+sentinel://host:port[,...]/master[/db]")
    db = int(parts[1]) if len(parts) == 2 else 0
    options = parse_qs(query)
    return RedisSource(sentinels=sentinels, master_name=unquote(parts[0]), password=password,
                       sentinel_password=options.get("sentinel_password", [""])[0], db=db)


def to_url(source: RedisSource) -> str:
    """The one-string form of a source, as `from_url` reads it."""
    if not source.uses_sentinel:
        return source.url
    auth = f":{quote(source.password, safe='')}@" if source.password else ""
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in source.sentinels)
    query = (f"?sentinel_password={quote(source.sentinel_password, safe='')}"
             if source.sentinel_password else "")
    name = quote(source.master_name, safe="")
    return f"{SENTINEL_SCHEME}://{auth}{hosts}/{name}/{source.db}{query}"


def from_section(section: dict[str, Any]) -> RedisSource:
    """The source of ``index.redis``: its sentinel keys when ``sentinels`` is set, else its URL."""
    if section.get("sentinels"):
        return RedisSource(
            sentinels=tuple(parse_address(a) for a in section["sentinels"]),
            master_name=section["master_name"], password=section["password"],
            sentinel_password=section["sentinel_password"], db=section["db"])
    source = from_url(section.get("url", ""))
    if section.get("password") and not source.uses_sentinel:
        return RedisSource(url=source.url, password=section["password"])
    return source
