"""`dockyard serve`: every process on one machine, each one restarted when it dies.

Children are started in dependency order (redis, index, storage, router, and
haproxy when TLS is on: `services.tls`; the webhook dispatcher when endpoints
are configured) and stopped in the reverse. The
secret that signs calls into storage and the index (`shared.service_auth`) is
generated in the data directory unless configured. A child that exits is restarted with exponential
backoff while the others go on serving. Children get SIGKILL from the kernel
if the supervisor itself is killed, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import redis_server
from shared import redis_source, service_auth

log = logging.getLogger("dockyard.supervisor")

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
# A child that ran this long is healthy again: its next crash restarts fast.
STABLE_AFTER = 10.0
# On stop, what a child gets beyond its own drain deadline (http.drain_timeout)
# to close its listener and exit, before it is killed.
STOP_MARGIN = 5.0
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
    # Listening sockets the supervisor holds for the child (see `listen_sockets`).
    sockets: tuple[socket.socket, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, preexec_fn=_die_with_parent,
                                        stdin=subprocess.DEVNULL, env=_child_env(self.env),
                                        pass_fds=[s.fileno() for s in self.sockets])
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


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
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


def router_processes(config: dict[str, Any]) -> int:
    """How many router processes share the public port: one Python process
    serves on one core at a time (the GIL), and the router is the one door
    every request passes through (bench/README.md has the measurements)."""
    return config["router"]["processes"] or os.cpu_count() or 1


class ListenError(OSError):
    """An address `serve` cannot listen on (taken, or not this machine's)."""


def listen_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for every address of `host` (as waitress binds
    them), made here once so that several router processes accept from the same
    queue, and a router restarting loses no queued connection."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   socket.IPPROTO_TCP, socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            s = socket.socket(family, kind, proto)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((address[0], port, *address[2:]))
            s.listen(backlog)
            port = s.getsockname()[1]  # port 0: every address on the one the first got
    except OSError as e:
        for s in sockets:
            s.close()
        raise ListenError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sockets


def _share_internal_secret(config: dict[str, Any], data_dir: Path) -> None:
    """Unless one is configured, generate the secret that signs internal calls
    (`shared.service_auth`) in the data directory; children inherit its name."""
    section = config["internal"]
    if not section["secret"] and not section["secret_file"]:
        path = service_auth.ensure_secret_file(data_dir / service_auth.SECRET_FILE_NAME)
        section["secret_file"] = os.environ["DOCKYARD_INTERNAL_SECRET_FILE"] = str(path)
    service_auth.key_from_config(config)  # a bad secret stops `serve` before any child


def plan(config: dict[str, Any], config_path: str | None, host: str, port: int,
         data_dir: Path) -> tuple[list[Child], dict[str, Any]]:
    """The children of `serve` and the addresses they were given."""
    from services import tls
    from services.cli import CHILD_REDIS_URL

    data_dir.mkdir(parents=True, exist_ok=True)
    _share_internal_secret(config, data_dir)
    cli = [sys.executable, "-m", "services.cli"]
    common = ["--config", config_path] if config_path else []
    children: list[Child] = []
    redis_url = config["index"]["redis"]["url"]
    if config["index"]["redis"]["sentinels"]:
        redis_url = redis_source.to_url(redis_source.from_section(config["index"]["redis"]))
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
    # The URL (which may carry a password) goes in the environment, not in argv.
    redis_env = {CHILD_REDIS_URL: redis_url}
    children.append(Child("index", [*cli, "index", *common, "--listen",
                                    index_url[len("http://"):]], env=redis_env))
    children.append(Child("storage", [*cli, "storage", *common, "--listen",
                                      storage_url[len("http://"):], "--root", storage_root,
                                      "--index", index_url], env=redis_env))
    # With TLS, haproxy takes the public address and the routers a private one behind it.
    router_host, router_port, public_url, behind = host, port, f"http://{host}:{port}", []
    if tls.enabled(config):
        router_host, router_port, public_url = "127.0.0.1", 0, f"https://{host}:{port}"
        behind = ["--trusted-proxy", "127.0.0.1"]
    public = listen_sockets(router_host, router_port, config["http"]["backlog"])
    router_listen = f"{router_host}:{public[0].getsockname()[1]}"
    router = [*cli, "router", *common, *_token_key_args(config, data_dir), *behind,
              "--listen", router_listen,
              "--listen-fd", ",".join(str(s.fileno()) for s in public),
              "--storage", storage_url, "--index", index_url,
              "--metrics-listen", f"127.0.0.1:{metrics_port}",
              # One machine, one disk: the router sends blobs itself.
              "--storage-root", storage_root]
    count = router_processes(config)
    env: dict[str, str] = dict(redis_env)
    if count > 1:
        # One /metrics for all router processes: each writes its samples to
        # files in this directory (prometheus_client's multiprocess mode), and
        # whichever process accepts a scrape adds them all up.
        metrics_dir = data_dir / "router-metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        metrics = listen_sockets("127.0.0.1", metrics_port, 64)
        router += ["--metrics-fd", str(metrics[0].fileno()),
                   "--write-fence", str(data_dir / "router-write-fence")]
        public += metrics
    for i in range(count):
        children.append(Child("router" if count == 1 else f"router-{i + 1}", router,
                              sockets=tuple(public), env=env))
    if tls.enabled(config):
        children.append(tls.terminator_child(config, data_dir, f"{host}:{port}",
                                             router_listen))
    addresses = {"redis": redis_url, "index": index_url, "storage": storage_url,
                 "router": public_url,
                 "router_metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    if config["notifications"]["endpoints"]:
        # The webhook dispatcher; a stable consumer name resumes its own
        # unfinished deliveries at once when it is restarted.
        listen = config["notifications"]["metrics_listen"] or f"127.0.0.1:{free_port()}"
        children.append(Child("notifications", [
            *cli, "notifications", *common,
            "--consumer", f"{socket.gethostname()}-serve", "--metrics-listen", listen],
            env=redis_env))
        addresses["notifications_metrics"] = f"http://{listen}/metrics"
    return children, addresses


def _token_key_args(config: dict[str, Any], data_dir: Path) -> list[str]:
    """With access control on and no key configured, one generated in the data directory
    (kept across restarts, so issued tokens and upload URLs stay valid)."""
    from shared.auth import settings

    if not settings.enabled(config) or config["auth"]["token"]["key"]:
        return []
    key = data_dir / "auth" / "token-key.pem"
    if not key.exists():
        # Only now: PyJWT and cryptography would stay in the supervisor's RSS.
        from shared.auth.tokens import generate_key

        generate_key(key)
        log.info("generated the token signing key %s", key)
    return ["--token-key", str(key)]


def run(children: list[Child], drain_timeout: float = 0.0) -> int:
    """Start the children and restart any that dies, until SIGTERM or SIGINT.

    Then stop them in reverse order, routers first, so that what a draining
    router still forwards finds storage and the index up. They share one
    deadline: the drain timeout plus a margin, after which a child is killed.
    """
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
        deadline = time.monotonic() + drain_timeout + STOP_MARGIN
        for child in reversed(children):
            child.stop()
            child.wait(deadline)
    log.info("stopped")
    return 0


__all__ = ["Child", "ListenError", "free_port", "free_ports", "listen_sockets", "plan",
           "router_processes", "run"]
