"""Running client binaries: availability checks, bounded subprocess calls, versions."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

# Debian package providing each binary, for the skip message.
APT_PACKAGES: dict[str, str] = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "podman": "podman",
    "buildah": "buildah",
    "skopeo": "skopeo",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "go": "golang-go",
    "docker-registry": "docker-registry",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}

# Filled while the session runs, written out at its end (see conftest.py).
VERSIONS: dict[str, str] = {}

# A test marked with this runs once more against dockyard on its S3 backend
# (SeaweedFS), the same steps (the `registry` fixture in conftest.py).
ON_BOTH_BACKENDS = pytest.mark.parametrize("registry", ["filesystem", "s3"], indirect=True)

DEFAULT_TIMEOUT = 120.0
_OUTPUT_TAIL = 4000


def _missing(message: str) -> None:
    # A CI machine is supposed to have every client: there a gap is a failure.
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(*binaries: str) -> None:
    """Skip (fail under CI) unless every binary is on PATH."""
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        packages = sorted({APT_PACKAGES.get(name, name) for name in missing})
        _missing(f"{', '.join(missing)} not installed: apt-get install -y {' '.join(packages)}")


def require_python_module(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        _missing(f"Python package {pip_name} not installed: .venv/bin/pip install {pip_name}")


class CommandError(AssertionError):
    """A client command failed; the message carries what it printed."""


def _tail(text: str) -> str:
    return text if len(text) <= _OUTPUT_TAIL else "...\n" + text[-_OUTPUT_TAIL:]


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a hard timeout; raise CommandError on failure."""
    __tracebackhide__ = True
    argv = [os.fspath(a) for a in args]
    try:
        proc = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise CommandError(
            f"timed out after {timeout:.0f}s: {' '.join(argv)}\n"
            f"--- stdout\n{_tail(out or '')}\n--- stderr\n{_tail(err or '')}"
        ) from None
    if check and proc.returncode != 0:
        raise CommandError(describe(proc))
    return proc


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return (
        f"exit {proc.returncode}: {args}\n"
        f"--- stdout\n{_tail(proc.stdout or '')}\n--- stderr\n{_tail(proc.stderr or '')}"
    )


def record_version(name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Remember the first line a client prints about its version (once per session)."""
    if name in VERSIONS:
        return
    proc = run(args, env=env, timeout=30, check=False)
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    found = lines[0] if lines else f"unknown (exit {proc.returncode})"
    # Where it came from matters: a distribution package or something installed by hand.
    VERSIONS[name] = f"{found} ({shutil.which(args[0]) or args[0]})"


def record_python_version(name: str, distribution: str) -> None:
    if name not in VERSIONS:
        VERSIONS[name] = f"{distribution} {importlib.metadata.version(distribution)}"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without settings that would point clients elsewhere."""
    prefixes = ("DOCKER_", "CONTAINERD_", "CONTAINERS_", "REGISTRY_AUTH_FILE", "BUILDAH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env
