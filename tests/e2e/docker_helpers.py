"""Docker CLI steps shared by several test modules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .daemons import DockerDaemon

_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")
_LAYER = re.compile(
    r"^([0-9a-f]{12}): (Pushed|Layer already exists|Mounted from \S+)\s*$", re.MULTILINE
)


@dataclass
class PushResult:
    digest: str
    layers: dict[str, str]  # short layer id -> final status printed by docker push
    output: str


def parse_push(output: str) -> PushResult:
    match = _DIGEST.search(output)
    assert match, f"no digest in docker push output:\n{output}"
    return PushResult(
        match.group(1), {m.group(1): m.group(2) for m in _LAYER.finditer(output)}, output
    )


def load(docker: DockerDaemon, archive: Path) -> None:
    docker.docker("load", "--input", str(archive), timeout=600)


def push(docker: DockerDaemon, ref: str, timeout: float = 300) -> PushResult:
    return parse_push(docker.docker("push", ref, timeout=timeout).stdout)


def inspect(docker: DockerDaemon, ref: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(docker.docker("image", "inspect", ref).stdout)
    return data[0]


def exists(docker: DockerDaemon, ref: str) -> bool:
    return docker.docker("image", "inspect", ref, check=False).returncode == 0


def remove(docker: DockerDaemon, *refs: str) -> None:
    """Remove the references and make sure they are gone, so a later pull really pulls."""
    docker.docker("rmi", "--force", *refs)
    for ref in refs:
        assert not exists(docker, ref), f"{ref} still present after docker rmi"


def run_image(docker: DockerDaemon, ref: str, *args: str, timeout: float = 120) -> str:
    return docker.docker("run", "--rm", "--network", "none", ref, *args, timeout=timeout).stdout
