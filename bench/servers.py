"""Start and stop the two registries under test, each on loopback with fresh storage.

Processes are tracked by pid; stopping a server also stops every descendant
it spawned (dockyard runs a redis-server child), so nothing outlives the run
even on Ctrl-C or a protocol failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.client import wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_BIN = "/usr/bin/docker-registry"

# Kept deliberately close to distribution's own example config: the in-memory
# blob-descriptor cache is on because that is how the reference is normally
# deployed, so dockyard is compared against a well-configured baseline.
REFERENCE_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Server:
    """A running registry process plus where its files live."""

    label: str  # column name in the report: "dockyard" or "reference"
    kind: str  # what actually runs: "dockyard" or "reference"
    base_url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    version: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """An unused loopback port (tiny race until the server binds it; fine here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_reference_installed() -> str:
    """Path of the reference binary, installing Debian's package if missing."""
    found = shutil.which("docker-registry") or (
        REFERENCE_BIN if os.path.exists(REFERENCE_BIN) else None
    )
    if found:
        return found
    print("docker-registry not found; installing it with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "docker-registry"], env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "docker-registry"], env=env, check=True)
    found = shutil.which("docker-registry") or REFERENCE_BIN
    if not os.path.exists(found):
        raise RuntimeError("docker-registry is still missing after apt-get install")
    return found


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _spawn(cmd: list[str], log_path: Path, cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed by the OS on exit
    try:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            # Own session: a Ctrl-C in the terminal reaches only the harness,
            # which then stops the servers in order instead of racing them.
            start_new_session=True,
        )
    finally:
        log.close()


def start_reference(label: str, scratch: Path, template: str = REFERENCE_CONFIG,
                    env: dict[str, str] | None = None, **fields: object) -> Server:
    """The reference with the config `template` (formatted with root, port, `fields`),
    in environment `env` (default: this one)."""
    binary = ensure_reference_installed()
    workdir = Path(tempfile.mkdtemp(prefix=f"{label}-reference-", dir=scratch))
    root = workdir / "storage"
    root.mkdir()
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(template.format(root=root, port=port, **fields))
    log_path = workdir / "server.log"
    proc = _spawn([binary, "serve", str(config)], log_path, workdir, env)
    server = Server(
        label,
        "reference",
        f"http://127.0.0.1:{port}",
        proc,
        workdir,
        log_path,
        _version([binary, "--version"]),
    )
    _await(server, "/v2/")
    return server


def dockyard_command() -> list[str]:
    console = REPO_ROOT / ".venv" / "bin" / "dockyard"
    if console.exists():
        return [str(console)]
    return [sys.executable, "-m", "services.cli"]


# Same footing as the reference: no per-request access log (each line costs
# a write in three processes), warnings still logged for bug reports.
DOCKYARD_CONFIG = """\
log:
  level: warning
  access: false
"""


def start_dockyard(label: str, scratch: Path, extra_config: str = "",
                   env: dict[str, str] | None = None) -> Server:
    """dockyard with DOCKYARD_CONFIG plus `extra_config` (YAML) and `env` overrides."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{label}-dockyard-", dir=scratch))
    data = workdir / "data"
    data.mkdir()
    port = free_port()
    log_path = workdir / "server.log"
    config = workdir / "dockyard.yml"
    config.write_text(DOCKYARD_CONFIG + extra_config)
    cmd = [
        *dockyard_command(),
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
    ]
    proc = _spawn(cmd, log_path, REPO_ROOT, {**os.environ, **env} if env else None)
    commit = _version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    server = Server(
        label, "dockyard", f"http://127.0.0.1:{port}", proc, workdir, log_path, f"git {commit}"
    )
    server.extra["command"] = " ".join(cmd)
    _await(server, "/readyz")
    return server


def _await(server: Server, path: str, timeout: float = 60.0) -> None:
    try:
        wait_ready(server.base_url, path, timeout, alive=lambda: server.proc.poll() is None)
    except BaseException as exc:
        # Also on Ctrl-C: the caller never got this server, so nobody else
        # would stop it.
        tail = server.log_tail()
        stop(server)
        if not isinstance(exc, Exception):
            raise
        raise RuntimeError(
            f"{server.kind} failed to start: {exc}\n--- {server.log_path} ---\n{tail}"
        ) from exc


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def stop(server: Server, grace: float = 10.0) -> None:
    """Stop the server and all its descendants, by pid.

    The root gets SIGTERM first and time to shut its children down in its
    own order (signalling dockyard's children directly could make its
    supervisor restart them). Whatever of the tree is left then gets SIGTERM,
    and finally SIGKILL.
    """
    # Snapshot descendants first: once the parent dies they are re-parented
    # and could no longer be found through it.
    tree = process_tree(server.pid)
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            tree = process_tree(server.pid) or tree
    leftovers = [p for p in tree if p.pid != server.pid and p.is_running()]
    _signal_all(leftovers, signal.SIGTERM)
    _, alive = psutil.wait_procs(leftovers, timeout=3)
    _signal_all(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=3)
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(timeout=5)
