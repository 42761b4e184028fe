"""Building Redis clients from configuration: one server by URL, or a Sentinel-managed primary.

Every process that talks to the index's Redis builds its client here: the
index for its data, and every events subscriber (the index's search, storage's
tag cache, the router's response cache, through `shared.events`).

A *source* is given in one of two ways:

- a URL: ``redis://[:password@]host:port/db``, ``rediss://...``, ``unix:///path``;
- Sentinel: the sentinels' addresses, the master's name, the servers' password
  and the sentinels' own password. In ``index.redis`` these are the keys
  ``sentinels``, ``master_name``, ``password``, ``sentinel_password``; any key that
  takes a URL (``router.events_url``, ``storage.events_url``, ``index.redis.url``)
  also takes them as one string::

      redis+sentinel://[:password@]host:port[,host:port...]/master_name[/db]
          [?sentinel_password=...]

Rules that make a Sentinel failover safe:

- A Sentinel client asks the sentinels for the primary on every new
  connection, and redis-py drops a connection that finds its server demoted
  (READONLY becomes a ConnectionError), so a failover is followed without a
  restart. While no primary is known, commands fail with `MasterNotFoundError`.
- A command that meets a dropped connection is sent once more, at once, on a
  fresh one (`COMMAND_RETRY`): every write of the index is an idempotent Lua
  script, so a write sent twice does no harm.
- `is_retryable` names every Redis failure that means "not now" rather than
  "never": the index answers them with 503 and Retry-After, so a write is
  acknowledged only when Redis took it (see `ReplicaAck`).
- `ReplicaAck`: with ``index.redis.min_replicas_ack`` = N > 0, every write is
  followed on the same connection by ``WAIT N timeout``; fewer confirmations
  fail the write as retryable, so an acknowledged write is on N replicas
  besides the primary, and survives the primary's loss when Sentinel
  promotes one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379

# One more try, at once, on a fresh connection: it repairs a pooled connection to
# a server that restarted or was demoted, and adds no wait. Anything longer is the
# client's to retry, after the 503's Retry-After.
COMMAND_RETRY = Retry(NoBackoff(), 1)
# Error replies of a server that cannot take the command *now*.
_RETRYABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN", "LOADING", "READONLY", "TRYAGAIN",
                      "CLUSTERDOWN")


class ReplicationUnconfirmed(redis.exceptions.ConnectionError):
    """Fewer replicas confirmed a write within the timeout than configured.

    The write may be on the primary only; it is reported as not done, and the
    client sends it again (every index write is idempotent).
    """


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


def connect(source: RedisSource, *, retry: Retry | None = COMMAND_RETRY,
            **kwargs: Any) -> redis.Redis:
    """A client of the source's primary. `kwargs` are redis-py connection options."""
    retry = retry if retry is not None else Retry(NoBackoff(), 0)
    if source.password:
        kwargs.setdefault("password", source.password)
    if not source.uses_sentinel:
        return redis.Redis.from_url(source.url, retry=retry, **kwargs)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if source.sentinel_password:
        sentinel_kwargs["password"] = source.sentinel_password
    sentinel = Sentinel(list(source.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(source.master_name, db=source.db, retry=retry, **kwargs)


def is_retryable(error: BaseException) -> bool:
    """True when the failure means the command may succeed if sent again later."""
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                  | redis.exceptions.BusyLoadingError | redis.exceptions.ReadOnlyError):
        return True
    if isinstance(error, redis.exceptions.ResponseError):
        return str(error).startswith(_RETRYABLE_REPLIES)
    return False


@dataclass(frozen=True)
class ReplicaAck:
    """How many replicas must confirm a write, and how long to wait for them."""

    replicas: int = 0
    timeout: float = 1.0

    def queue(self, pipe: Any) -> bool:
        """Add ``WAIT`` to a pipeline holding writes; True when it did."""
        if self.replicas <= 0:
            return False
        pipe.execute_command("WAIT", self.replicas, max(1, int(self.timeout * 1000)))
        return True

    def check(self, confirmed: int) -> None:
        if confirmed < self.replicas:
            raise ReplicationUnconfirmed(
                f"{confirmed} of {self.replicas} replicas confirmed the write in time")

    def run(self, pipe: Any) -> list[Any]:
        """Execute a pipeline of writes, then confirm them; the writes' results."""
        waited = self.queue(pipe)
        results = pipe.execute()
        if waited:
            self.check(int(results.pop()))
        return results


__all__ = ["COMMAND_RETRY", "DEFAULT_URL", "RedisSource", "ReplicaAck",
           "ReplicationUnconfirmed", "connect", "from_section", "from_url", "is_retryable",
           "parse_address", "to_url"]
