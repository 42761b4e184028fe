"""The registry under test: dockyard (lead's fixture) or the reference CNCF distribution."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .daemons import ManagedProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


@dataclass
class Registry:
    """What the tests need to know about the running registry."""

    host: str
    port: int
    data_dir: Path
    kind: str
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def ref(self, repo: str, tag_or_digest: str | None = None) -> str:
        if tag_or_digest is None:
            return f"{self.addr}/{repo}"
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.addr}/{repo}{sep}{tag_or_digest}"

    def log_size(self) -> int:
        if self.log_path is None or not self.log_path.exists():
            return 0
        return self.log_path.stat().st_size

    def log_since(self, offset: int, max_lines: int = 80) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no registry log available)"
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
        # The reference logs each request twice; its access-log line is enough.
        lines = [line for line in lines if 'msg="response completed' not in line]
        return "\n".join(line[:600] for line in lines[-max_lines:])


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    registry: Registry,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> HttpResult:
    """One plain request to the registry; error statuses are returned, not raised."""
    req = urllib.request.Request(registry.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(
                resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            )
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@dataclass
class Manifest:
    """A manifest as the registry serves it."""

    body: dict[str, Any]
    digest: str
    size: int
    content_type: str


def get_manifest(registry: Registry, repo: str, ref: str) -> Manifest:
    res = http(registry, "GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ALL_MANIFESTS})
    assert res.status == 200, f"GET /v2/{repo}/manifests/{ref} -> {res.status} {res.body[:500]!r}"
    return Manifest(
        body=res.json(),
        digest="sha256:" + hashlib.sha256(res.body).hexdigest(),
        size=len(res.body),
        content_type=res.headers.get("content-type", ""),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, proc: ManagedProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    for _ in range(int(timeout / 0.1) + 1):
        if time.monotonic() > deadline:
            break
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"status {resp.status}"
        except (urllib.error.URLError, OSError) as err:
            last = str(err)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s ({last}):\n{proc.log_tail()}")


REFERENCE_CONFIG = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


def start_reference(workdir: Path) -> tuple[Registry, ManagedProcess]:
    """Start Debian's docker-registry (distribution 2.8) with filesystem storage."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(REFERENCE_CONFIG.format(root=data, port=port))
    proc = ManagedProcess.start(
        "docker-registry", ["docker-registry", "serve", str(config)], workdir / "registry.log"
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/v2/", proc)
    except Exception:
        proc.stop()
        raise
    version = subprocess.run(
        ["docker-registry", "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    registry = Registry(
        host="127.0.0.1",
        port=port,
        data_dir=data,
        kind="reference",
        log_path=proc.log_path,
        extra={"version": version},
    )
    return registry, proc


def from_dockyard_fixture(obj: Any) -> Registry:
    """Adapt the lead's `dockyard` fixture object, whatever log attribute it offers."""
    log_path: Path | None = None
    for attr in ("log_path", "log_file", "log", "stderr_path"):
        value = getattr(obj, attr, None)
        if isinstance(value, (str, Path)) and Path(value).exists():
            log_path = Path(value)
            break
    return Registry(
        host=str(obj.host),
        port=int(obj.port),
        data_dir=Path(obj.data_dir),
        kind="dockyard",
        log_path=log_path,
    )
