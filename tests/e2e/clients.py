"""podman, buildah and skopeo with private storage and private configuration.

They all read containers/* configuration; pointing every file at the session's
temporary directory keeps the host's registries, credentials and signature
policy out of the tests, and keeps the tests' images out of the host's storage.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .daemons import unmount_under
from .tools import clean_env, record_version, run

CONTAINERS_CONF = """\
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"

[network]
network_config_dir = "{root}/networks"
"""

# Without this podman would try to resolve short names against docker.io.
REGISTRIES_CONF = 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'

POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class ContainersConfig:
    """Private configuration files shared by podman, buildah and skopeo."""

    def __init__(self, root: Path) -> None:
        self.root = root
        home = root / "home"
        (home / ".config" / "containers").mkdir(parents=True, exist_ok=True)
        (root / "registries.d").mkdir(parents=True, exist_ok=True)
        self.policy = root / "policy.json"
        self.policy.write_text(json.dumps(POLICY))
        # containers/image looks for a per-user policy under $HOME first.
        (home / ".config" / "containers" / "policy.json").write_text(json.dumps(POLICY))
        (root / "registries.conf").write_text(REGISTRIES_CONF)
        (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root))
        (root / "auth.json").write_text('{"auths": {}}\n')
        self.env = clean_env(
            HOME=str(home),
            CONTAINERS_CONF=str(root / "containers.conf"),
            CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
            REGISTRY_AUTH_FILE=str(root / "auth.json"),
        )


class _StorageClient:
    """A client with its own vfs image store under `root`."""

    binary = ""

    def __init__(self, root: Path, config: ContainersConfig) -> None:
        self.root = root
        self.config = config
        root.mkdir(parents=True, exist_ok=True)
        record_version(self.binary, [self.binary, "--version"], env=config.env)

    def global_flags(self) -> list[str]:
        return [
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver=vfs",
        ]  # fmt: skip

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run(
            [self.binary, *self.global_flags(), *args],
            env=self.config.env,
            timeout=timeout,
            check=check,
        )

    def stop(self) -> None:
        unmount_under(self.root)


class Podman(_StorageClient):
    binary = "podman"
    # Flags every `podman run` here needs: no network, and limits the sandbox allows.
    RUN_FLAGS = (
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    )

    def global_flags(self) -> list[str]:
        return [
            *super().global_flags(),
            "--tmpdir",
            str(self.root / "tmp"),
            "--cgroup-manager",
            "cgroupfs",
        ]

    def stop(self) -> None:
        self("rm", "--all", "--force", timeout=60, check=False)
        super().stop()


class Buildah(_StorageClient):
    binary = "buildah"

    def stop(self) -> None:
        self("rm", "--all", timeout=60, check=False)
        super().stop()


class Skopeo:
    def __init__(self, config: ContainersConfig) -> None:
        self.config = config
        record_version("skopeo", ["skopeo", "--version"], env=config.env)

    def argv(self, *args: str) -> list[str]:
        return [
            "skopeo",
            "--policy", str(self.config.policy),
            "--registries.d", str(self.config.root / "registries.d"),
            *args,
        ]  # fmt: skip

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run(self.argv(*args), env=self.config.env, timeout=timeout, check=check)
