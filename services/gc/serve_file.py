"""`<data-dir>/serve.json`: where the parts of a running `dockyard serve` listen.

`serve` writes it when it starts; `dockyard gc --data-dir` (`services.gc.runtime`)
reads it. Apart from the runtime because the supervisor writes it and should not
import what the collector needs (redis-py, the index and storage code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SERVE_FILE = "serve.json"


def write_serve_file(data_dir: Path, addresses: dict[str, Any], storage_root: str,
                     config_path: str | None = None,
                     storage_backend: str = "filesystem") -> None:
    """Written by `dockyard serve`: where its parts listen, and the configuration file
    it runs with, for `dockyard gc --data-dir` and the other admin commands."""
    path = data_dir / SERVE_FILE
    tmp = path.with_name(f".{SERVE_FILE}.{os.getpid()}")
    # The Redis URL may carry its password: readable by the owner alone.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({**addresses, "storage_root": storage_root,
                            "storage_backend": storage_backend,
                            "config": str(Path(config_path).resolve()) if config_path
                            else ""}))
    os.replace(tmp, path)
