"""Helpers of the webhook tests: a deployment with endpoints, quick manifest pushes,
and the dispatcher's metrics and `dockyard events` output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import urllib3

from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient
from tests.support.webhook_receiver import write_config


def deployment(tmp_path: Path, endpoints: list[dict[str, Any]], **notifications: Any) -> Dockyard:
    config = write_config(tmp_path / "dockyard.yml", endpoints, **notifications)
    return Dockyard(tmp_path / "data", config=config)


def redis_url(dockyard: Dockyard) -> str:
    return dockyard.redis_url()


def metrics_text(dockyard: Dockyard) -> str:
    cmd = dockyard.child("notifications").cmdline()
    url = "http://" + cmd[cmd.index("--metrics-listen") + 1] + "/metrics"
    return urllib3.request("GET", url, timeout=5).data.decode()


def events_cli(dockyard: Dockyard, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "dockyard"), "events", *args, "--redis-url", redis_url(dockyard)]
    if dockyard.config is not None:
        argv += ["--config", str(dockyard.config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **dockyard.env})


class ManifestPusher:
    """Pushes many distinct manifests over the same two blobs: one PUT each."""

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        layer = os.urandom(64)
        self._config = {"mediaType": OCI_CONFIG, "digest": client.push_blob(repo, config),
                        "size": len(config)}
        self._layer = {"mediaType": OCI_LAYER, "digest": client.push_blob(repo, layer),
                       "size": len(layer)}

    def body(self, n: int) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": self._config, "layers": [self._layer],
                           "annotations": {"n": str(n), "nonce": os.urandom(4).hex()}}).encode()

    def push(self, n: int, tag: str | None = None) -> tuple[int, str, bytes]:
        """(status, digest or "", body)."""
        body = self.body(n)
        r = self.client.put_manifest(self.repo, tag or f"t{n}", body)
        return r.status, r.headers.get("Docker-Content-Digest", ""), body
