"""`dockyard serve`: every process on one machine, each one restarted when it dies.

Children are started in dependency order (redis, index, storage, router, and
the webhook dispatcher when endpoints are configured) and
stopped in the reverse. A child that exits is restarted with exponential
backoff while the others go on serving. Children get SIGKILL from the kernel
if the supervisor itself is killed, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import redis_server

log = logging.getLogger("dockyard.supervisor")

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
# A child that ran this long is healthy again: its next crash restarts fast.
STABLE_AFTER = 10.0
STOP_GRACE = 5.0
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all are held open until all are chosen, since a
    port released at once may be handed out again by the very next bind."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, preexec_fn=_die_with_parent,
                                        stdin=subprocess.DEVNULL, env=_child_env())
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def poll(self, now: float) -> None:
        if self.process is None:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return
        code = self.process.poll()
        if code is None:
            return
        if now - self.started_at > STABLE_AFTER:
            self.backoff = BACKOFF_START
        log.warning("%s (pid %d) exited with %s; restarting in %.1fs",
                    self.name, self.process.pid, _describe(code), self.backoff)
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", self.name)
            self.process.kill()
            self.process.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # glibc gives every thread that allocates its own malloc arena and keeps
    # freed memory in each; with 16 server threads that is most of a Python
    # service's RSS. Two arenas cost no measurable throughput here.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # Allocations from 128 KiB up (socket reads, body pieces) are mapped and
    # unmapped on their own. glibc's default raises that threshold after the
    # first such free, and freed pieces then stay in the heap as resident memory.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    return env


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def plan(config: dict[str, Any], config_path: str | None, host: str, port: int,
         data_dir: Path) -> tuple[list[Child], dict[str, Any]]:
    """The children of `serve` and the addresses they were given."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "services.cli"]
    common = ["--config", config_path] if config_path else []
    children: list[Child] = []
    redis_url = config["index"]["redis"]["url"]
    redis_port, index_port, storage_port, metrics_port = free_ports(4)
    if not redis_url:
        redis_dir = data_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        children.append(Child("redis", redis_server.command(
            redis_server.find_binary(), redis_port, redis_dir,
            config["index"]["redis"]["appendfsync"])))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    index_url = f"http://127.0.0.1:{index_port}"
    storage_url = f"http://127.0.0.1:{storage_port}"
    storage_root = config["storage"]["root"]
    if storage_root == "./dockyard-data/storage":
        storage_root = str(data_dir / "storage")
    children.append(Child("index", [*cli, "index", *common, "--listen",
                                    index_url[len("http://"):], "--redis-url", redis_url]))
    children.append(Child("storage", [*cli, "storage", *common, "--listen",
                                      storage_url[len("http://"):], "--root", storage_root,
                                      "--index", index_url, "--events-url", redis_url]))
    children.append(Child("router", [*cli, "router", *common, "--listen", f"{host}:{port}",
                                     "--storage", storage_url, "--index", index_url,
                                     "--metrics-listen", f"127.0.0.1:{metrics_port}",
                                     # One machine, one disk: the router sends blobs itself.
                                     "--storage-root", storage_root,
                                     "--events-url", redis_url]))
    addresses = {"redis": redis_url, "index": index_url, "storage": storage_url,
                 "router": f"http://{host}:{port}",
                 "router_metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    if config["notifications"]["endpoints"]:
        # The webhook dispatcher; a stable consumer name resumes its own
        # unfinished deliveries at once when it is restarted.
        listen = config["notifications"]["metrics_listen"] or f"127.0.0.1:{free_port()}"
        children.append(Child("notifications", [
            *cli, "notifications", *common, "--redis-url", redis_url,
            "--consumer", f"{socket.gethostname()}-serve", "--metrics-listen", listen]))
        addresses["notifications_metrics"] = f"http://{listen}/metrics"
    return children, addresses


def run(children: list[Child]) -> int:
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for child in children:
        child.start()
    try:
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.poll(now)
            time.sleep(0.05)
    finally:
        log.info("stopping")
        deadline = time.monotonic() + STOP_GRACE
        for child in reversed(children):
            child.stop()
            child.wait(deadline)
    log.info("stopped")
    return 0


__all__ = ["Child", "free_port", "free_ports", "plan", "run"]
