"""Graceful drain: on SIGTERM a service stops taking connections and finishes what it has.

The rules, in order:

1. The listening sockets close at once: a new connection is refused, so a
   router (or a load balancer) sends it to another replica straight away
   instead of to a process that is leaving.
2. Every answer whose headers are sent from then on carries ``Connection:
   close``, and its connection closes once it is sent, so clients and routers
   do not send another request on it.
3. A connection with nothing in progress (no request being received, run or
   sent) is closed; this is checked in the server's own loop thread, the one
   that reads requests, so a request is never cut between arrival and service.
4. When no connection is left, or after ``http.drain_timeout`` seconds, the
   process exits. A second SIGTERM or SIGINT exits at once.

The module holds the server-specific part in `WaitressDrain`: which sockets
listen, which connections are busy, how an answer closes its connection.
`serve()` (`shared.server`) calls `Drain.start` from its signal handler.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel

log = logging.getLogger("dockyard.drain")

SWEEP_EVERY = 0.05


class Drain:
    def __init__(self, timeout: float, name: str) -> None:
        self.timeout = timeout
        self.name = name
        self.draining = False
        self._started = False

    def start(self, server: Any, signum: int) -> bool:
        """Begin draining `server`; False when the caller should exit now instead
        (a second signal, or no drain configured)."""
        if self._started or self.timeout <= 0:
            return False
        self._started = True
        self.draining = True
        target = WaitressDrain(server)
        target.stop_listening()
        target.close_after_answers()
        log.info("%s draining: %d connections open, up to %.0fs", self.name,
                 target.open_connections(), self.timeout)
        thread = threading.Thread(target=self._wait, args=(target, signum),
                                  name="drain", daemon=True)
        thread.start()
        return True

    def _wait(self, target: WaitressDrain, signum: int) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            target.close_idle()
            if target.open_connections() == 0:
                log.info("%s drained", self.name)
                break
            time.sleep(SWEEP_EVERY)
        else:
            log.warning("%s: %d connections still busy after %.0fs; exiting", self.name,
                        target.open_connections(), self.timeout)
        # The signal handler runs in the main thread, which owns the server loop.
        os.kill(os.getpid(), signum)


class WaitressDrain:
    """The waitress side: its listeners, its connections, its loop thread."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._map: dict[int, Any] = getattr(server, "_map", None) or getattr(server, "map", {})
        # The wake-up pipe of the loop: the server's own, or (several listeners)
        # that of one of them, which all share the loop's map.
        self._trigger = getattr(server, "trigger", None) or next(
            (listener.trigger for listener in self._listeners()
             if getattr(listener, "trigger", None) is not None), None)

    def _listeners(self) -> Iterable[Any]:
        # One listener is the server itself; several (a name with v4 and v6
        # addresses) sit in the map of a MultiSocketServer.
        candidates = [self._server, *list(self._map.values())]
        return [d for d in candidates if hasattr(d, "channel_class") and hasattr(d, "accept")]

    def _channels(self) -> list[HTTPChannel]:
        return [d for d in list(self._map.values()) if isinstance(d, HTTPChannel)]

    def stop_listening(self) -> None:
        for listener in self._listeners():
            # dispatcher.close, not the server's close(): that also closes the
            # trigger that wakes the loop, which the drain still needs.
            if listener.socket is not None:
                wasyncore.dispatcher.close(listener)

    def close_after_answers(self) -> None:
        """Have each connection's next answer say ``Connection: close`` and then close.

        waitress refuses a Connection header from the app (PEP 3333: hop by hop),
        so the task that writes the answer does it. Set per connection: no new
        connection can arrive once the listeners are closed."""
        for channel in self._channels():
            channel.task_class = _closing(channel.task_class)

    def open_connections(self) -> int:
        return len(self._channels())

    def close_idle(self) -> None:
        """Close, in the loop thread, every connection with nothing in progress."""
        done = threading.Event()

        def sweep() -> None:
            try:
                for channel in self._channels():
                    if (not channel.requests and channel.request is None
                            and not channel.total_outbufs_len and not channel.will_close):
                        channel.will_close = True
                        # The epoll loop (shared/event_loop.py) looks again only at
                        # connections marked as changed.
                        mark = getattr(self._map, "mark", None)
                        if mark is not None:
                            mark(channel._fileno)
            finally:
                done.set()

        if self._trigger is None:
            return
        self._trigger.pull_trigger(sweep)
        done.wait(1.0)


_CLOSING: dict[type, type] = {}


def _closing(task_class: type) -> type:
    if getattr(task_class, "closes_connection", False):
        return task_class
    if task_class not in _CLOSING:

        class ClosingTask(task_class):  # type: ignore[misc, valid-type]
            closes_connection = True

            def build_response_header(self) -> bytes:
                self.set_close_on_finish()
                return super().build_response_header()

        _CLOSING[task_class] = ClosingTask
    return _CLOSING[task_class]


__all__ = ["Drain", "WaitressDrain"]
