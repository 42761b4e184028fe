"""Serving a WSGI app with waitress, with the limits a registry needs."""

from __future__ import annotations

import functools
import io
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import falcon
import waitress
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask
from waitress.wasyncore import _DISCONNECTED

from shared import errors, event_loop
from shared.chunked import FastChunkedParser
from shared.config import parse_listen
from shared.drain import Drain
from shared.overload import SheddingDispatcher

log = logging.getLogger("dockyard.server")

# waitress refuses bodies over 1 GiB by default; layers of 10 GiB and more are
# normal, so the only bound is the disk.
UNLIMITED_BODY = 1 << 62


def waitress_options(cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    http = cfg["http"]
    return {
        "threads": threads,
        "max_request_body_size": UNLIMITED_BODY,
        "max_request_header_size": http["max_header_size"],
        "channel_timeout": http["idle_timeout"],
        # waitress looks for timed-out connections only every cleanup_interval
        # (default 30 s), which would stretch a short idle_timeout to 30 s.
        "cleanup_interval": max(1, min(30, http["idle_timeout"] // 2)),
        "connection_limit": http["connection_limit"],
        "backlog": http["backlog"],
        # Large socket reads and writes: blobs move in big pieces.
        "recv_bytes": 256 * 1024,
        "send_bytes": 1,
        # Response bodies stay in memory (waitress spills anything over 1 MiB to
        # a temporary file by default); the high watermark makes the app thread
        # wait for a slow client instead, so memory per connection is bounded.
        "outbuf_overflow": 32 * 1024 * 1024,
        "outbuf_high_watermark": 8 * 1024 * 1024,
        "inbuf_overflow": 4 * 1024 * 1024,
        # select() cannot watch more than 1024 descriptors.
        "asyncore_use_poll": True,
        "ident": "dockyard",
        "clear_untrusted_proxy_headers": False,
    }


def _refusal(request: Any) -> errors.RegistryError:
    """The OCI error for a request waitress refused before the app saw it.

    - a body over the size limit (413) and an unreadable body length, a
      malformed Content-Length or chunk (400): SIZE_INVALID, the length is wrong;
    - a URI waitress cannot split, which is one with raw non-ASCII bytes: the
      code of the part that holds them (`errors.unrouted`), so NAME_INVALID in a
      repository name;
    - headers over the limit (431), an unknown transfer coding (501) and any
      other malformed request (400): UNSUPPORTED, the spec's code for "an
      invalid set of parameters"; the status stays waitress's.
    """
    e = request.error
    reason = str(e.body)
    if e.code == 400 and reason == "Bad URI":
        uri = getattr(request, "request_uri", "").partition("?")[0]
        err = errors.unrouted(getattr(request, "command", ""),
                              unquote_to_bytes(uri.encode("latin-1")).decode("utf-8", "replace"))
        if not isinstance(err, errors.NotFound):
            return err
    if e.code == 413 or (e.code == 400 and ("Content-Length" in reason or "hunk" in reason)):
        err = errors.SizeInvalid()
    else:
        err = errors.Unsupported(e.reason.lower())
    err.status = e.code
    err.detail = {"reason": reason[:200]}
    return err


class OciErrorTask(ErrorTask):
    """waitress's own error answers (malformed request, headers over the limit) as the
    registry's JSON error body instead of waitress's plain text."""

    def execute(self) -> None:
        err = _refusal(self.request)
        body = errors.render(err)
        self.status = falcon.code_to_http_status(err.status)
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


# What an HTTP server answers to a TLS ClientHello: Go's TLS client recognises
# it ("server gave HTTP response to HTTPS client") and falls back to HTTP at once.
_NOT_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 38\r\nConnection: close\r\n\r\n"
            b"this port speaks HTTP, not HTTPS (TLS)\n")


class FileRange(NamedTuple):
    """A part of a file to send, in place of the bytes themselves (see `enable_sendfile`)."""

    fd: int
    offset: int
    count: int


_read_file_range = ReadOnlyFileBasedBuffer.get


def _file_range(self: ReadOnlyFileBasedBuffer, numbytes: int = -1, skip: bool = False) -> Any:
    if skip:
        return _read_file_range(self, numbytes, skip)
    try:
        fd = self.file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return _read_file_range(self, numbytes, skip)
    if numbytes == -1 or numbytes > self.remain:
        numbytes = self.remain
    return FileRange(fd, self.file.tell(), numbytes)


# A response piece at least this large is sent from its own bytes (`MemoryPiece`).
DIRECT_PIECE = 64 * 1024


class MemoryPiece(ReadOnlyFileBasedBuffer):
    """A response body piece that waitress sends from the bytes object itself.

    waitress copies every piece an application yields into its output buffer
    (a BytesIO: the piece is copied in, grows the buffer, and is copied out
    again, a socket buffer at a time), which cost two thirds of the CPU of a
    process streaming a blob. `OciChannel.write_soon` hands a large immutable
    piece over as its own output buffer instead, the way waitress already takes
    a `wsgi.file_wrapper`: the socket sends slices of a memoryview of it. Only
    `bytes` qualify: nobody can change them while they wait to be sent.

    An application may also yield pieces itself: a view of a buffer it reuses
    (`PieceBuffers`), whose `release` gives the buffer back once every byte was
    sent or the connection closed, and never sooner.
    """

    def __init__(self, data: bytes | memoryview,  # no super(): there is no file
                 release: Callable[[], None] | None = None) -> None:
        self.file = None
        self._view = memoryview(data)
        self.remain = len(self._view)
        self._release = release

    def __getitem__(self, span: slice) -> MemoryPiece:
        # waitress cuts what an application writes to its Content-Length.
        start, stop, _ = span.indices(self.remain)
        if (start, stop) == (0, self.remain):
            return self
        return MemoryPiece(self._view[start:stop])

    def get(self, numbytes: int = -1, skip: bool = False) -> memoryview:
        if numbytes == -1 or numbytes > self.remain:
            numbytes = self.remain
        piece = self._view[:numbytes]
        if skip:
            self.skip(numbytes)
        return piece

    def skip(self, numbytes: int, allow_prune: int = 0) -> None:
        self._view = self._view[numbytes:]
        self.remain -= numbytes

    def close(self) -> None:
        self._view = memoryview(b"")
        self.remain = 0
        release, self._release = self._release, None
        if release is not None:
            release()


class PieceBuffers:
    """Buffers a process reuses to relay bodies from one socket to another.

    Reading a blob into a new `bytes` per piece costs more than the copy: each
    1 MiB allocation is fresh memory (glibc maps it, the kernel faults in and
    zeroes every page), which was most of the CPU, in the kernel, of a router
    relaying a blob. Reused buffers are written in place by `recv_into`. At most
    `idle` wait here; the pieces in flight are bounded by each connection's
    output high watermark.
    """

    def __init__(self, size: int = 1024 * 1024, idle: int = 8) -> None:
        self.size = size
        self._idle: list[bytearray] = []
        self._max_idle = idle

    def _take(self) -> bytearray:
        try:
            return self._idle.pop()
        except IndexError:
            return bytearray(self.size)

    def _give(self, buf: bytearray) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(buf)

    def pieces(self, readinto: Callable[[memoryview], int]) -> Iterator[MemoryPiece]:
        """The body `readinto` writes into buffers (0: it ended), as pieces for
        waitress to send from these buffers."""
        while True:
            buf = self._take()
            n = readinto(memoryview(buf))
            if not n:
                self._give(buf)
                return
            yield MemoryPiece(memoryview(buf)[:n], functools.partial(self._give, buf))


def enable_sendfile() -> None:
    """Send `wsgi.file_wrapper` bodies (blobs) with sendfile(2), process-wide.

    waitress's channel reads a file answer into memory a socket buffer at a
    time, sends what the socket takes, and reads the rest again on the next
    turn. Here the buffer hands out the file range instead, and `OciChannel`
    has the kernel copy it from the page cache to the socket.
    """
    ReadOnlyFileBasedBuffer.get = _file_range  # type: ignore[method-assign]


class OciChannel(HTTPChannel):
    error_task_class = OciErrorTask
    parser_class = FastChunkedParser  # docker push's chunked bodies (shared/chunked.py)
    _first_bytes = True

    def write_soon(self, data: Any) -> int:
        if type(data) is bytes and len(data) >= DIRECT_PIECE:
            data = MemoryPiece(data)
        return int(super().write_soon(data))

    def send(self, data: Any, do_close: bool = True) -> int:
        if not isinstance(data, FileRange):
            return super().send(data, do_close)
        try:
            return os.sendfile(self.socket.fileno(), data.fd, data.offset, data.count)
        except BlockingIOError:
            return 0
        except OSError as why:
            if why.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise

    def service(self) -> None:
        # Lets the event loop's wake-up name this connection (shared/event_loop.py).
        event_loop.current.channel = self
        try:
            super().service()
        finally:
            event_loop.current.channel = None

    # Set while the main thread queues a connection's first request; see shared/overload.py.
    sheddable = False

    def shed(self, answer: bytes) -> None:
        """Answer the request just received with `answer` and close (main thread,
        under `requests_lock`, as `received` calls it)."""
        for request in self.requests:
            request.close()
        self.requests = []
        with self.outbuf_lock:
            self.outbufs[-1].append(answer)
            self.total_outbufs_len += len(answer)
        self.close_when_flushed = True

    def received(self, data: bytes) -> bool:
        self.sheddable = True
        try:
            return self._received(data)
        finally:
            self.sheddable = False

    def _received(self, data: bytes) -> bool:
        if self._first_bytes and data:
            self._first_bytes = False
            if data[0] == 0x16:
                # dockerd, podman, skopeo and buildah try HTTPS first on an
                # insecure registry; without an answer each waits out a 10 s
                # handshake timeout before trying plain HTTP.
                with self.requests_lock:
                    self.outbufs[-1].append(_NOT_TLS)
                    self.total_outbufs_len += len(_NOT_TLS)
                    self.close_when_flushed = True
                return False
        return super().received(data)


def make_server(app: Any, host: str, port: int, cfg: dict[str, Any], threads: int,
                **extra: Any) -> Any:
    """A waitress server with dockyard's channel, on the epoll loop where there is one."""
    options = {**waitress_options(cfg, threads), **extra}
    if "sockets" not in options:
        options.update(host=host, port=port)
    channel_map = event_loop.ChannelMap() if event_loop.supported() else {}
    dispatcher = SheddingDispatcher(cfg["http"]["queue_timeout"])
    dispatcher.set_thread_count(threads)
    server = create_server(app, map=channel_map, _dispatcher=dispatcher, **options)
    # One listener is a server; several (a name with v4 and v6 addresses) are in its map.
    for listener in [server, *channel_map.values()]:
        if hasattr(listener, "channel_class"):
            listener.channel_class = OciChannel
    if isinstance(channel_map, event_loop.ChannelMap):
        event_loop.install(server, channel_map)
    return server


def serve(app: Any, listen: str, cfg: dict[str, Any], threads: int, name: str,
          sockets: list[Any] | None = None) -> None:
    """Serve `app` until SIGTERM or SIGINT, on `listen`, or on already listening
    `sockets` (which other processes may share) when given."""
    host, port = parse_listen(listen)
    enable_sendfile()
    server = make_server(app, host, port, cfg, threads, **({"sockets": sockets} if sockets else {}))

    drain = Drain(cfg["http"]["drain_timeout"], name)

    def stop(signum: int, frame: Any) -> None:
        if drain.start(server, signum):
            return
        log.info("%s stopping on signal %d", name, signum)
        server.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s listening on %s:%s", name, host, server.effective_port)
    try:
        server.run()
    except SystemExit:
        raise
    finally:
        server.close()


__all__ = ["make_server", "serve", "waitress", "waitress_options"]
