"""An epoll loop for waitress that touches only the sockets that are ready.

waitress 3's loop (`wasyncore.poll2`) asks every open connection whether it
is readable and writable, builds a new poll set from the answers and polls
it, on every turn; a worker thread wakes the loop after each response. With
many keep-alive clients a request so pays for every other open connection
several times over: the cost per request grows with the number of clients.

This loop keeps waitress's channels, parser, tasks and threads, and changes
only how the main thread waits:

- One epoll set lives as long as the server. A dispatcher's interest (read,
  write, or none) is asked again, and the set changed, only when something
  may have changed it: it had an event this turn, it was just added, or a
  worker thread that served it woke the loop.
- Worker threads wake the loop through waitress's trigger pipe, as before;
  `DirtyTracker.pull_trigger` first records which connection the waking
  thread was serving (a thread-local set by `OciChannel.service`). A wake-up
  from anywhere else marks every connection, so nothing can be missed.
- The listening sockets and the trigger are asked every turn: the listener's
  `readable()` runs waitress's idle-connection sweep and its connection
  limit, and there are only a few of them.
- Rules kept from `poll2`: a dispatcher that wants neither reading nor
  writing is not in the set at all (epoll would report a hang-up on it
  regardless, and waitress must not see one while a request is in a worker);
  a listening socket is never asked for writing; events go through
  `wasyncore.readwrite`, so errors and hang-ups are handled as waitress does.
- A closed connection leaves the set in `del_channel`, before its descriptor
  is closed and could be reused by the next accepted connection.
"""

from __future__ import annotations

import contextlib
import select
import threading
from errno import EINTR
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel

_READ = select.EPOLLIN | select.EPOLLPRI
_WRITE = select.EPOLLOUT
_ALWAYS = select.EPOLLERR | select.EPOLLHUP

# The connection a worker thread is serving; see `DirtyTracker.pull_trigger`.
current = threading.local()


def supported() -> bool:
    return hasattr(select, "epoll")


class ChannelMap(dict[int, Any]):
    """waitress's socket map (fd -> dispatcher) that keeps the epoll set in step.

    waitress adds and removes dispatchers through `map[fd] = obj` and
    `del map[fd]` only (wasyncore's add_channel/del_channel).
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoll = select.epoll()
        self.registered: dict[int, int] = {}  # fd -> event mask in the epoll set
        self._lock = threading.Lock()
        self._dirty: set[int] = set()
        self._all_dirty = False
        # Asked on every turn: listeners and the trigger (a handful).
        self.always: dict[int, Any] = {}

    def __setitem__(self, fd: int, obj: Any) -> None:
        super().__setitem__(fd, obj)
        if not isinstance(obj, HTTPChannel):
            self.always[fd] = obj
        self.mark(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.always.pop(fd, None)
        self._forget(fd)

    def pop(self, fd: int, *default: Any) -> Any:  # type: ignore[override]
        obj = super().pop(fd, *default)
        self.always.pop(fd, None)
        self._forget(fd)
        return obj

    def _forget(self, fd: int) -> None:
        if self.registered.pop(fd, None) is not None:
            # Already closed: the kernel dropped it from the set.
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)

    def mark(self, fd: int) -> None:
        """Ask this dispatcher for its interest again before the next wait."""
        with self._lock:
            self._dirty.add(fd)

    def mark_all(self) -> None:
        with self._lock:
            self._all_dirty = True

    def _take_dirty(self) -> set[int] | None:
        """The marked descriptors, or None for all of them."""
        with self._lock:
            if self._all_dirty:
                self._all_dirty = False
                self._dirty = set()
                return None
            dirty, self._dirty = self._dirty, set()
            return dirty

    def refresh(self, fd: int, obj: Any) -> None:
        mask = 0
        if obj.readable():
            mask |= _READ
        # A listening socket is never asked for writing (as in wasyncore.poll2).
        if not obj.accepting and obj.writable():
            mask |= _WRITE
        old = self.registered.get(fd)
        if mask:
            mask |= _ALWAYS
            if old is None:
                self.epoll.register(fd, mask)
                self.registered[fd] = mask
            elif old != mask:
                self.epoll.modify(fd, mask)
                self.registered[fd] = mask
        elif old is not None:
            del self.registered[fd]
            self.epoll.unregister(fd)

    def turn(self, timeout: float) -> None:
        dirty = self._take_dirty()
        if dirty is None:
            items = list(self.items())
        else:
            items = [(fd, obj) for fd in dirty.union(self.always)
                     if (obj := self.get(fd)) is not None]
        for fd, obj in items:
            try:
                self.refresh(fd, obj)
            except OSError:
                obj.handle_error()
        try:
            events = self.epoll.poll(timeout)
        except OSError as err:
            if err.args[0] != EINTR:
                raise
            return
        touched = []
        for fd, flags in events:
            obj = self.get(fd)
            if obj is None:
                continue
            wasyncore.readwrite(obj, flags)
            touched.append(fd)
        if touched:
            with self._lock:
                self._dirty.update(touched)


def loop(timeout: float = 30.0, use_poll: bool = True, map: ChannelMap | None = None,
         count: int | None = None) -> None:
    """`wasyncore.loop`'s signature, so a server's `asyncore.loop` can be this."""
    if not isinstance(map, ChannelMap):
        wasyncore.loop(timeout, use_poll, map, count)
        return
    try:
        while map and (count is None or count > 0):
            map.turn(timeout)
            if count is not None:
                count -= 1
    finally:
        map.epoll.close()


class _Shim:
    """Stands in for the `wasyncore` module on a waitress server (its `asyncore`
    attribute, which waitress keeps as a test shim); only `loop` differs."""

    dispatcher = wasyncore.dispatcher
    loop = staticmethod(loop)


SHIM = _Shim()


def pull_trigger(server: Any, channel_map: ChannelMap) -> None:
    """A server's `pull_trigger`: mark what the waking thread served, then wake."""
    channel = getattr(current, "channel", None)
    if channel is not None and channel._fileno is not None:
        channel_map.mark(channel._fileno)
    else:
        channel_map.mark_all()
    server.trigger.pull_trigger()


def install(server: Any, channel_map: ChannelMap) -> None:
    """Run `server` (a waitress server made with `map=channel_map`) on this loop."""
    listeners = [server, *channel_map.values()]
    server.asyncore = SHIM
    for listener in listeners:
        if hasattr(listener, "trigger") and hasattr(listener, "task_dispatcher"):
            listener.asyncore = SHIM
            listener.pull_trigger = (
                lambda listener=listener: pull_trigger(listener, channel_map))
            listener.maintenance = _marking(listener.maintenance, channel_map)


def _marking(maintenance: Any, channel_map: ChannelMap) -> Any:
    """The idle sweep sets `will_close` on connections it does not otherwise
    touch; ask them all again afterwards (it runs every `cleanup_interval`)."""

    def sweep(now: float) -> None:
        maintenance(now)
        channel_map.mark_all()

    return sweep


__all__ = ["ChannelMap", "current", "install", "loop", "supported"]
