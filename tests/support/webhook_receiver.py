"""A webhook receiver on loopback for tests: records every POST, and can be told to
answer with an error status, to stall before answering, or to refuse connections."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _peer_closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@dataclass
class Received:
    at: float  # time.time() when the body was read
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int  # the status sent; 0 while stalling, -1 when the sender left first

    @property
    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.body)["events"]


@dataclass
class Receiver:
    status: int = 200  # what to answer
    stall: float = 0.0  # seconds to wait before answering
    posts: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tls: bool = False

    def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, stall = receiver.status, receiver.stall
                got = Received(time.time(), self.path, dict(self.headers.items()), body, 0)
                with receiver._lock:
                    receiver.posts.append(got)
                if stall:
                    time.sleep(stall)
                    if _peer_closed(self.connection):
                        got.answered = -1  # the sender gave up (its timeout): not delivered
                        return
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                    got.answered = status
                except OSError:
                    got.answered = -1

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._tls = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[dict[str, Any]]:
        """Every event of every POST answered 2xx, in arrival order."""
        with self._lock:
            posts = list(self.posts)
        return [e for p in posts if 200 <= p.answered < 300 for e in p.events]

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.delivered()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.delivered())} of {count} events arrived in {timeout}s")


def write_config(path: Path, endpoints: list[dict[str, Any]], **notifications: Any) -> Path:
    """A dockyard config file with these webhook endpoints and `notifications` keys."""
    import yaml

    path.write_text(yaml.safe_dump({"notifications": {"endpoints": endpoints,
                                                      **notifications}}))
    return path


def metric(text: str, name: str, endpoint: str) -> float:
    """One per-endpoint sample from a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f'{name}{{endpoint="{endpoint}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
