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

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

# The parsing half lives apart so that config loading need not import redis-py.
from shared.redis_source import (  # noqa: F401 (re-exported)
    DEFAULT_SENTINEL_PORT,
    DEFAULT_URL,
    SENTINEL_SCHEME,
    RedisSource,
    from_section,
    from_url,
    is_sentinel_url,
    parse_address,
    to_url,
)

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


def index_url(config: dict[str, Any]) -> str:
    """The index's Redis, as a URL (``redis+sentinel://`` for a Sentinel setup), for a
    process other than the index: the collector, and storage on an object store."""
    from shared.config import ConfigError

    section = config["index"]["redis"]
    url = (config["gc"]["redis_url"]
           or (to_url(from_section(section)) if section["sentinels"] or section["url"]
               else "")
           or config["storage"]["events_url"])
    if not url:
        raise ConfigError("gc.redis_url: the collector's fences need the index's Redis; "
                          "set gc.redis_url (or index.redis.url, or storage.events_url), "
                          "or use --data-dir")
    return url


def index_client(config: dict[str, Any], **kwargs: Any) -> tuple[redis.Redis, ReplicaAck]:
    """A client of the index's Redis (`index_url`), and the replica acknowledgement
    the index's own writes wait for. `kwargs` are redis-py connection options."""
    section = config["index"]["redis"]
    source = from_url(index_url(config))
    if section["password"] and not source.password and not source.uses_sentinel:
        source = RedisSource(url=source.url, password=section["password"])
    ack = ReplicaAck(section["min_replicas_ack"], section["replica_ack_timeout"])
    return connect(source, **kwargs), ack


__all__ = ["COMMAND_RETRY", "DEFAULT_URL", "RedisSource", "ReplicaAck",
           "ReplicationUnconfirmed", "connect", "from_section", "from_url", "index_client",
           "index_url", "is_retryable", "parse_address", "to_url"]
