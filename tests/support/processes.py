"""Starting real dockyard and redis processes for tests, and finding their children."""

from __future__ import annotations

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

import psutil
import urllib3

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, status: int = 200,
              ca_certs: str | None = None) -> None:
    http = urllib3.PoolManager(retries=False, timeout=1.0, ca_certs=ca_certs)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if http.request("GET", url).status == status:
                return
        except urllib3.exceptions.HTTPError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s ({last})")


@dataclass
class Dockyard:
    """A `dockyard serve` started the way a user starts it."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    config: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # With TLS configured: the CA that signed its certificate (the URL is then https).
    ca_certs: Path | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_certs else 'http'}://{self.addr}"

    def start(self, timeout: float = 30.0) -> Dockyard:
        self.log_path = self.data_dir.with_suffix(".log")
        argv = [str(VENV_BIN / "dockyard"), "serve", "--host", self.host, "--port",
                str(self.port), "--data-dir", str(self.data_dir)]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        wait_http(self.url + "/readyz", timeout,
                  ca_certs=str(self.ca_certs) if self.ca_certs else None)
        return self

    def __enter__(self) -> Dockyard:
        """Started (if it is not yet) for the block, stopped after it, whatever happens."""
        if self.process is None or self.process.poll() is not None:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def child(self, service: str) -> psutil.Process:
        """The running child process of `serve` for 'router', 'storage', 'index' or 'redis'
        (the first router, when `serve` runs several)."""
        found = self.children(service)
        if not found:
            raise LookupError(f"no {service} child")
        return found[0]

    def children(self, service: str) -> list[psutil.Process]:
        """Every running child process of `serve` for one service."""
        assert self.process is not None
        found = []
        for proc in psutil.Process(self.process.pid).children():
            try:
                cmd = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if (service == "redis" and cmd and "server" in Path(cmd[0]).name) or (
                    len(cmd) > 3 and cmd[2] == "services.cli" and cmd[3] == service):
                found.append(proc)
        return found

    def kill(self, service: str) -> int:
        """SIGKILL one child; returns its pid."""
        proc = self.child(service)
        proc.kill()
        proc.wait(5)
        return proc.pid

    def wait_restarted(self, service: str, old_pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.child(service).pid != old_pid:
                    wait_http(self.url + "/readyz", max(0.1, deadline - time.monotonic()))
                    return
            except LookupError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{service} was not restarted within {timeout}s")

    def redis_url(self) -> str:
        """The URL of the Redis `serve` gave its children (in their environment, so that
        a password in it is not on a command line)."""
        from services.cli import CHILD_REDIS_URL

        return self.child("index").environ()[CHILD_REDIS_URL]

    def service_key(self) -> Any:
        """The key `serve` generated for its services' calls to each other."""
        from shared.service_auth import SECRET_FILE_NAME, ServiceKey

        return ServiceKey((self.data_dir / SECRET_FILE_NAME).read_text().strip())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port, with AOF, for integration tests."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        from services import redis_server

        self.directory.mkdir(parents=True, exist_ok=True)
        argv = redis_server.command(redis_server.find_binary(), self.port, self.directory,
                                    "always")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
