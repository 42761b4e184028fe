"""A highly available dockyard on one machine, started by the tests.

Each process binds its own loopback address in a /24 of 127/8 picked at
random per topology (so concurrent runs do not collide), and every service
keeps its standard port, as it would on its own host or pod:

    .10 .11        Redis primary and replica (redis-server, AOF, appendfsync always)
    .12 .13 .14    three sentinels (redis-sentinel), quorum 2
    .20 .21        index
    .30 .31 .32    storage, sharing one storage root
    .40 .41        routers

Routers and storage find their backends by name, as behind a Kubernetes
headless service: each runs in a mount namespace of its own whose /etc/hosts
(a file of the topology, bind-mounted) maps ``storage.dockyard.test`` and
``index.dockyard.test`` to every replica's address, so the names go through
the real resolver (getaddrinfo) and `shared.discovery`.

Every dockyard process reads a YAML file of its own, built from
`Topology.config_for`; `extra_config` is merged into all of them, so a key a
deployment needs (a shared secret, TLS) is one dict away.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from tests.support.processes import wait_http

PASSWORD = "ha-test-secret"
INTERNAL_SECRET = "ha-topology-internal-secret-0123456789"
MASTER = "dockyard"
REDIS_PORT, SENTINEL_PORT = 6379, 26379
ROUTER_PORT, STORAGE_PORT, INDEX_PORT = 5000, 5100, 5200
# Processes run with this group id can be cut off from Redis by an iptables
# owner match (scenario 4); they stay root, so file permissions are unchanged.
PARTITION_GID = 47474
STORAGE_NAME, INDEX_NAME = "storage.dockyard.test", "index.dockyard.test"
# Run argv with `hosts` bind-mounted on /etc/hosts, in a mount namespace of its own.
_WITH_HOSTS = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']


def can_use_hosts_file() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _wait_redis(host: str, port: int, password: str | None, timeout: float = 15.0) -> None:
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


@dataclass
class Proc:
    """One process of the topology: how to start it, and the running process."""

    name: str
    host: str
    port: int
    directory: Path
    argv: list[str] = field(default_factory=list)
    gid: int | None = None
    hosts: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        gid = self.gid

        def preexec() -> None:
            os.setsid()
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)

        argv = [*_WITH_HOSTS, str(self.hosts), *self.argv] if self.hosts else self.argv
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=preexec,
                                            cwd=self.directory)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM and wait for the exit; the seconds it took."""
        start = time.monotonic()
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - start

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class RedisNode(Proc):
    replica_of: str | None = None

    def write_config(self) -> Path:
        conf = self.directory / "redis.conf"
        if conf.exists():  # kept: Sentinel rewrites it (replicaof) across restarts
            return conf
        lines = [
            f"bind {self.host}", f"port {self.port}", f"dir {self.directory}",
            "daemonize no", "protected-mode no", "save \"\"",
            "appendonly yes", "appendfsync always",
            f"requirepass {PASSWORD}", f"masterauth {PASSWORD}",
            f"replica-announce-ip {self.host}", f"bind-source-addr {self.host}",
            "loglevel notice", f"logfile {self.log_path}",
            # A replica that (re)joins is synced at once, not after 5 s.
            "repl-diskless-sync-delay 0",
        ]
        if self.replica_of:
            lines.append(f"replicaof {self.replica_of} {REDIS_PORT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> RedisNode:
        self.argv = ["redis-server", str(self.write_config())]
        self.spawn()
        _wait_redis(self.host, self.port, PASSWORD)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=PASSWORD, socket_timeout=2)

    def role(self) -> str:
        client = self.client()
        try:
            return client.info("replication")["role"]
        finally:
            client.close()


@dataclass
class SentinelNode(Proc):
    primary: str = ""

    def start(self) -> SentinelNode:
        conf = self.directory / "sentinel.conf"
        if not conf.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            conf.write_text("\n".join([
                f"bind {self.host}", f"port {self.port}", f"dir {self.directory}",
                "daemonize no", "protected-mode no", f"logfile {self.log_path}",
                f"sentinel announce-ip {self.host}",
                f"sentinel monitor {MASTER} {self.primary} {REDIS_PORT} 2",
                f"sentinel auth-pass {MASTER} {PASSWORD}",
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 4000",
                f"sentinel parallel-syncs {MASTER} 1",
            ]) + "\n")
        self.argv = ["redis-sentinel", str(conf)]
        self.spawn()
        _wait_redis(self.host, self.port, None)
        return self


@dataclass
class Service(Proc):
    kind: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> Service:
        path = self.directory / "config.yml"
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.config))
        self.argv = [sys.executable, "-m", "services.cli", self.kind, "--config", str(path)]
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_http(self.url + "/readyz", timeout)


class Topology:
    def __init__(self, directory: Path, *, routers: int = 2, storage: int = 3, index: int = 2,
                 extra_config: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self.use_dns = can_use_hosts_file()
        self.hosts = directory / "hosts"
        self.extra_config = extra_config or {}
        self.storage_root = directory / "storage-root"
        ip = self.ip
        self.redis = [RedisNode("redis-0", ip(10), REDIS_PORT, directory / "redis-0"),
                      RedisNode("redis-1", ip(11), REDIS_PORT, directory / "redis-1",
                                replica_of=ip(10))]
        self.sentinels = [SentinelNode(f"sentinel-{i}", ip(12 + i), SENTINEL_PORT,
                                       directory / f"sentinel-{i}", primary=ip(10))
                          for i in range(3)]
        self.index = [self._service("index", i, ip(20 + i), INDEX_PORT) for i in range(index)]
        self.storage = [self._service("storage", i, ip(30 + i), STORAGE_PORT)
                        for i in range(storage)]
        self.routers = [self._service("router", i, ip(40 + i), ROUTER_PORT)
                        for i in range(routers)]
        if self.use_dns:
            for service in [*self.storage, *self.routers]:
                service.hosts = self.hosts

    def ip(self, last: int) -> str:
        return f"{self.net}.{last}"

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"{s.host}:{s.port}" for s in self.sentinels]

    @property
    def sentinel_url(self) -> str:
        return (f"redis+sentinel://:{PASSWORD}@{','.join(self.sentinel_addresses)}"
                f"/{MASTER}/0")

    def _service(self, kind: str, i: int, host: str, port: int) -> Service:
        return Service(f"{kind}-{i}", host, port, self.directory / f"{kind}-{i}", kind=kind)

    def write_hosts(self) -> None:
        """The names' addresses: every replica, whether running or not, as DNS would
        list every pod behind a headless service (health checks do the rest)."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{s.host} {STORAGE_NAME}" for s in self.storage]
        lines += [f"{s.host} {INDEX_NAME}" for s in self.index]
        # Written in place: a bind mount follows the file's inode, not its name.
        with open(self.hosts, "w") as f:
            f.write("\n".join(lines) + "\n")

    def add_storage(self) -> Service:
        """Start one more storage replica and add it to the name, as scaling a
        Deployment up adds a pod to its headless service."""
        i = len(self.storage)
        service = self._service("storage", i, self.ip(30 + i), STORAGE_PORT)
        service.hosts = self.hosts if self.use_dns else None
        service.config = self.config_for(service)
        service.start()
        self.storage.append(service)
        self.write_hosts()
        return service

    def remove_storage(self, service: Service) -> None:
        """Take a replica out of the name, then stop it gracefully (scaling down)."""
        self.storage.remove(service)
        self.write_hosts()
        service.terminate(30)

    def config_for(self, service: Service) -> dict[str, Any]:
        if self.use_dns:
            index_urls = [f"http://{INDEX_NAME}:{INDEX_PORT}"]
            storage_urls = [f"http://{STORAGE_NAME}:{STORAGE_PORT}"]
        else:
            index_urls = [s.url for s in self.index]
            storage_urls = [s.url for s in self.storage]
        base = {
            "log": {"level": "info"},
            "http": {"drain_timeout": 15},
            # Storage and the index answer only calls signed with the shared secret.
            "internal": {"secret": INTERNAL_SECRET},
            "discovery": {"interval": 2.0, "health_interval": 0.5},
            "index": {"listen": f"{service.host}:{INDEX_PORT}", "redis": {
                "sentinels": self.sentinel_addresses, "master_name": MASTER,
                "password": PASSWORD, "min_replicas_ack": 1, "replica_ack_timeout": 1.0}},
            "storage": {"listen": f"{service.host}:{STORAGE_PORT}",
                        "root": str(self.storage_root), "index_urls": index_urls,
                        "events_url": self.sentinel_url, "rpc_timeout": 3.0},
            "router": {"listen": f"{service.host}:{ROUTER_PORT}",
                       "storage_urls": storage_urls,
                       "index_urls": index_urls, "events_url": self.sentinel_url,
                       "retry_after": 1, "backend_timeout": 30},
        }
        return merge(base, self.extra_config)

    @property
    def services(self) -> list[Service]:
        return [*self.index, *self.storage, *self.routers]

    @property
    def router_urls(self) -> list[str]:
        return [r.url for r in self.routers]

    def start_redis(self) -> Topology:
        for node in self.redis:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_sentinels_agree()
        self.wait_replicated()
        return self

    def start(self) -> Topology:
        self.storage_root.mkdir(parents=True, exist_ok=True)
        self.write_hosts()
        self.start_redis()
        for group in (self.index, self.storage, self.routers):
            for service in group:
                service.config = self.config_for(service)
                service.start()
        return self

    def restart(self, service: Service) -> None:
        service.start()

    def stop(self) -> None:
        for proc in [*reversed(self.services), *self.sentinels, *self.redis]:
            with contextlib.suppress(Exception):
                if proc.running:
                    proc.signal(signal.SIGKILL)
                    assert proc.process is not None
                    proc.process.wait(10)

    # -- Redis -----------------------------------------------------------------------

    def primary(self) -> RedisNode:
        """The node the sentinels name as primary now."""
        client = redis.Redis(host=self.sentinels[0].host, port=SENTINEL_PORT, socket_timeout=2)
        try:
            host, _ = client.sentinel_get_master_addr_by_name(MASTER)
        finally:
            client.close()
        host = host.decode() if isinstance(host, bytes) else host
        return next(node for node in self.redis if node.host == host)

    def wait_sentinels_agree(self, timeout: float = 20.0) -> None:
        """Every sentinel knows the other two and the replica, so a failover can happen."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for sentinel in self.sentinels:
                client = redis.Redis(host=sentinel.host, port=SENTINEL_PORT, socket_timeout=1)
                try:
                    state = client.sentinel_master(MASTER)
                    ok = ok and (int(state["num-other-sentinels"]) == len(self.sentinels) - 1
                                 and int(state["num-slaves"]) >= 1)
                except redis.exceptions.RedisError:
                    ok = False
                finally:
                    client.close()
            if ok:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the sentinels did not discover each other and the replica")
            time.sleep(0.2)

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """The primary has a replica in sync again (after a failover and a restart)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                primary = self.primary()
                client = primary.client()
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                replicas = [v for k, v in info.items() if k.startswith("slave")
                            and isinstance(v, dict)]
                if info["role"] == "master" and any(r.get("state") == "online"
                                                    for r in replicas):
                    return
            except (redis.exceptions.RedisError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("no replica in sync with the primary")
            time.sleep(0.2)
