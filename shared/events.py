"""Change events in the index's Redis, which keep every cache of index state honest.

The index publishes a *scope* on ``<key prefix>events`` in the same Lua script
that changes what the scope covers:

- ``repo:<name>``: the repository's tags, manifests or referrers changed;
- ``catalog``: a repository appeared or a description changed, so catalog
  pages and search answers may differ.

Storage's tag cache and the router's response cache subscribe through
`Subscription`. It calls `on_change(scope)` per event and `on_state(live)`
whenever the subscription comes up or goes down: a closed connection or an
unanswered ping (at most `PING_EVERY + SOCKET_TIMEOUT` seconds to notice)
turns fresh cache hits off until it is back, since events may have been
missed meanwhile.

The source is a URL or a Sentinel setup (`shared.redis_client`). Behind
Sentinel, each reconnection asks the sentinels for the primary, so after a
failover the subscription comes back on the promoted server; the connection
is never retried silently, so every break is seen (and turns hits off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared import redis_client
from shared.redis_client import RedisSource

log = logging.getLogger("dockyard.events")

PING_EVERY = 2.0
SOCKET_TIMEOUT = 3.0
CATALOG_SCOPE = "catalog"
# Sent by a router that would keep the answer. A service then answers from the
# source of truth (the index in Redis, not a cache of its own, which may not
# have seen the latest event yet) and, when it did, sets CACHEABLE_HEADER: the
# answer is a function of index state as of now, so the router may keep it
# until an event for its scope (`shared.event_cache`).
CACHE_WANTED_HEADER = "X-Dockyard-Cache-Wanted"
CACHEABLE_HEADER = "X-Dockyard-Cacheable"


def channel(key_prefix: str) -> str:
    return f"{key_prefix}events"


def repo_scope(name: str) -> str:
    return f"repo:{name}"


class Subscription:
    def __init__(self, source: str | RedisSource, channel_name: str,
                 on_change: Callable[[str], None], on_state: Callable[[bool], None]) -> None:
        self._source = (source if isinstance(source, RedisSource)
                        else redis_client.from_url(source))
        self._channel = channel_name
        self._on_change = on_change
        self._on_state = on_state
        self._backoff = 0.1

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="events", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while True:
            try:
                self._listen()
            except Exception as e:  # any failure: caches off, then reconnect
                log.warning("index events unavailable (%s); cached answers are off",
                            type(e).__name__)
            self._on_state(False)
            time.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, 5.0)

    def _listen(self) -> None:
        client = redis_client.connect(self._source, retry=None, socket_connect_timeout=2,
                                      socket_timeout=SOCKET_TIMEOUT)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self._channel)
            last_ping = last_heard = time.monotonic()
            while True:
                message = pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None:
                    last_heard = now
                    if message["type"] == "subscribe":
                        self._backoff = 0.1
                        self._on_state(True)
                        log.info("subscribed to index events (%s)",
                                 self._source.describe())
                    elif message["type"] == "message":
                        self._on_change(message["data"].decode())
                if now - last_heard > PING_EVERY + SOCKET_TIMEOUT:
                    # A silent partition drops packets without closing the
                    # connection: only the missing PONG tells.
                    raise TimeoutError("no answer to ping from the events server")
                if now - last_ping > PING_EVERY:
                    pubsub.ping()
                    last_ping = now
        finally:
            pubsub.close()
            client.close()
