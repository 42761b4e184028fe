"""Webhook pull events through the pull-through cache: a blob's first pull, which
streams from the upstream while it is verified, is a pull as a cached one is."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.helpers import wait_until
from tests.proxy.conftest import proxy_dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Front, Pusher
from tests.support.webhook_receiver import Receiver


def test_first_and_cached_blob_pulls_are_both_pull_events(
        tmp_path: Path, front: Front, pusher: Pusher) -> None:
    name = f"team/events-{uuid.uuid4().hex[:8]}"
    image = pusher.image(name, "v1")
    layer, size = image["layers"][0]["digest"], image["layers"][0]["size"]
    receiver = Receiver().start()
    server = proxy_dockyard(tmp_path / "mirror", [{"prefix": "up", "url": front.url}])
    assert server.config is not None
    config = yaml.safe_load(server.config.read_text())
    config["notifications"] = {"endpoints": [{"name": "all", "url": receiver.url}],
                               "blob_pull": True}
    server.config.write_text(yaml.safe_dump(config))
    server.start()
    try:
        client = RegistryClient(server.url)
        local = f"up/{name}"
        statuses = []
        for _ in range(2):
            r = client.request("GET", f"/v2/{local}/blobs/{layer}")
            assert r.status == 200
            statuses.append(r.headers["Cache-Status"])
        assert "hit" not in statuses[0] and statuses[1] == "dockyard; hit"

        def pulls() -> list[dict[str, Any]]:
            return [e for e in receiver.delivered()
                    if e["action"] == "pull" and e["target"].get("repository") == local]
        wait_until(lambda: len(pulls()) >= 2, 15, what="two pull events")
        first, cached = pulls()
        for event in (first, cached):
            assert event["target"]["digest"] == layer
            assert event["target"]["size"] == size
        assert first["id"] != cached["id"]
    finally:
        server.stop()
        receiver.stop()
