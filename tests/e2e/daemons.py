"""Private dockerd and containerd instances, and stopping what the tests started.

Every daemon gets its own socket, root and state under the session's temporary
directory so that the tests never talk to (or disturb) a daemon of the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .tools import clean_env, record_version, run

_LOG_TAIL = 3000
_PR_SET_PDEATHSIG = 1


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), fields[19]


def descendants(root_pid: int) -> list[tuple[int, str]]:
    """All live descendants of root_pid as (pid, start time) pairs."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, str]] = []
    todo = [root_pid]
    for _ in range(10_000):
        if not todo:
            break
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _kill_if_same(pid: int, start_time: str) -> None:
    # Compare start times so that a recycled pid never gets our signal.
    stat = _proc_stat(pid)
    if stat is not None and stat[1] == start_time:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    # If pytest itself is killed (CI timeout, kill -9), no finalizer runs: let the
    # kernel send SIGTERM to the daemon instead of leaving it behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """A long-running process in its own session, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return cls(name, popen, log_path)

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-_LOG_TAIL:]

    def stop(self, grace: float = 20) -> None:
        """SIGTERM the process group, then SIGKILL whatever of its tree remains."""
        if self.popen.poll() is not None:
            return
        tree = descendants(self.popen.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        # Children that left the group (dockerd's containerd, shims) and outlived it.
        deadline = time.monotonic() + 5
        for pid, start in tree:
            for _ in range(50):
                stat = _proc_stat(pid)
                if stat is None or stat[1] != start or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            _kill_if_same(pid, start)


def _unescape_mount(path: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def unmount_under(root: Path) -> None:
    """Lazily unmount anything a crashed daemon may have left mounted below root."""
    prefix = str(root.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = {
        mp
        for mp in (_unescape_mount(line.split()[4]) for line in lines)
        if mp == prefix or mp.startswith(prefix + "/")
    }
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def _wait_until(ready: Callable[[], bool], proc: ManagedProcess, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.25) + 1):
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{proc.log_tail()}")


class DockerDaemon:
    """dockerd with vfs storage and no networking, its managed containerd included.

    Without --containerd, dockerd starts its own containerd under exec-root/data-root,
    so it cannot collide with the separate containerd used for the ctr tests.
    """

    def __init__(self, root: Path, daemon_config: dict[str, object] | None = None) -> None:
        self.root = root
        # daemon.json's settings (e.g. registry-mirrors); none by default.
        self.daemon_config = daemon_config or {}
        self.socket = root / "docker.sock"
        config_dir = root / "client-config"
        config_dir.mkdir(parents=True, exist_ok=True)
        # Own client config: no credentials or proxies of the host's ~/.docker leak in.
        self.env = clean_env(
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_CONFIG=str(config_dir),
            DOCKER_CLI_HINTS="false",
        )
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        daemon_json = self.root / "daemon.json"
        # An explicit empty config keeps /etc/docker/daemon.json (mirrors etc.) out.
        daemon_json.write_text(json.dumps(self.daemon_config) + "\n")
        argv = [
            "dockerd",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "-H", f"unix://{self.socket}",
            "--config-file", str(daemon_json),
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
        ]  # fmt: skip
        self.process = ManagedProcess.start(
            "dockerd", argv, self.root / "dockerd.log", env=self.env
        )

        def ready() -> bool:
            return self.docker("version", timeout=10, check=False).returncode == 0

        _wait_until(ready, self.process, "dockerd", timeout=60)
        record_version("docker CLI", ["docker", "--version"], env=self.env)
        record_version("dockerd", ["dockerd", "--version"])
        record_version(
            "docker API (negotiated)",
            ["docker", "version", "--format", "{{.Client.APIVersion}}"],
            env=self.env,
        )

    def docker(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run(["docker", *args], env=self.env, timeout=timeout, check=check)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=30)
        unmount_under(self.root)


CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


class Containerd:
    """A containerd of the tests' own (the CRI plugin is off: nothing but ctr talks to it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "containerd.sock"
        self.env = clean_env()
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(CONTAINERD_CONFIG.format(root=self.root))
        self.process = ManagedProcess.start(
            "containerd",
            ["containerd", "--config", str(config)],
            self.root / "containerd.log",
            env=self.env,
        )

        def ready() -> bool:
            return self.ctr("version", timeout=10, check=False).returncode == 0

        _wait_until(ready, self.process, "containerd", timeout=30)
        record_version("containerd", ["containerd", "--version"])
        record_version("ctr", ["ctr", "--version"])

    def ctr(
        self, *args: str, namespace: str = "e2e", timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run(
            ["ctr", "--address", str(self.socket), "--namespace", namespace, *args],
            env=self.env,
            timeout=timeout,
            check=check,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=20)
        unmount_under(self.root)
