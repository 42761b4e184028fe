"""The subscription to the index's tag events in Redis, which keeps the tag cache honest.

The index publishes a repository's name on `<key prefix>tag-events` in the
same Lua script that changes its tags. This thread listens, drops the
repository's cached tags, and reports whether the subscription is live: a
closed connection or an unanswered ping (at most `PING_EVERY + socket
timeout` seconds to notice) turns the cache's fresh hits off until it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger("dockyard.storage.tag_events")

PING_EVERY = 2.0
SOCKET_TIMEOUT = 3.0


def channel(key_prefix: str) -> str:
    return f"{key_prefix}tag-events"


class TagEvents:
    def __init__(self, url: str, channel_name: str, on_change: Callable[[str], None],
                 on_state: Callable[[bool], None]) -> None:
        self._url = url
        self._channel = channel_name
        self._on_change = on_change
        self._on_state = on_state

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="tag-events", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                self._listen()
            except Exception as e:  # any failure: cache off, then reconnect
                log.warning("tag events unavailable (%s); pulls by tag ask the index",
                            type(e).__name__)
            self._on_state(False)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _listen(self) -> None:
        client = redis.Redis.from_url(self._url, socket_connect_timeout=2,
                                      socket_timeout=SOCKET_TIMEOUT)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self._channel)
            last_ping = time.monotonic()
            while True:
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    if message["type"] == "subscribe":
                        self._on_state(True)
                        log.info("subscribed to tag events")
                    elif message["type"] == "message":
                        self._on_change(message["data"].decode())
                if time.monotonic() - last_ping > PING_EVERY:
                    pubsub.ping()
                    last_ping = time.monotonic()
        finally:
            pubsub.close()
            client.close()
