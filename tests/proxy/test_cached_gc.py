"""Cached content is collected like pushed content: `dockyard gc` keeps what a cached
tag references, deletes what nothing references, and retention policies apply to
mirrored repositories as to any other; on a directory and on S3, where the blobs the
cache fetched are committed through the backend and fenced like pushed ones."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.integration.helpers import stored_blob
from tests.proxy.conftest import proxy_dockyard
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Front, Pusher


def _stored(d: Dockyard, digest: str) -> bool:
    return stored_blob(d, digest) is not None


def _cli(d: Dockyard, *args: str) -> subprocess.CompletedProcess[str]:
    """`dockyard ARGS --data-dir` of `d`, with `d`'s environment (its backend's)."""
    return subprocess.run([str(VENV_BIN / "dockyard"), *args, "--data-dir", str(d.data_dir)],
                          env={**os.environ, **d.env}, capture_output=True, text=True,
                          timeout=120)


def _digests(image: dict[str, Any]) -> list[str]:
    doc = json.loads(image["manifest"])
    return [image["digest"], doc["config"]["digest"], *(x["digest"] for x in doc["layers"])]


def _pull(client: RegistryClient, name: str, tag: str, image: dict[str, Any]) -> list[str]:
    """Pull the image through the mirror; the Cache-Status of each of its blobs."""
    r = client.get_manifest(name, tag)
    assert r.status == 200 and r.data == image["manifest"], (r.status, r.data[:200])
    statuses = []
    for digest in _digests(image)[1:]:
        b = client.request("GET", f"/v2/{name}/blobs/{digest}")
        assert b.status == 200, (digest, b.status)
        statuses.append(b.headers["Cache-Status"])
    return statuses


def _gc(d: Dockyard, config: Path) -> dict[str, Any]:
    out = _cli(d, "gc", "--config", str(config), "--grace", "0", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cached_content_is_collected_and_retained_like_pushed_content(
        tmp_path: Path, front: Front, pusher: Pusher, backend: dict[str, str]) -> None:
    name = f"team/gc-{uuid.uuid4().hex[:8]}"
    old = pusher.image(name, "v0", layers=[os.urandom(6000)])
    new = pusher.image(name, "v1", layers=[os.urandom(6000)])
    stray = os.urandom(3000)
    stray_digest = pusher.blob(name, stray)
    server = proxy_dockyard(tmp_path / "mirror", [{"prefix": "up", "url": front.url}],
                            env=backend).start()
    try:
        client = RegistryClient(server.url)
        local = f"up/{name}"
        _pull(client, local, "v0", old)
        _pull(client, local, "v1", new)
        # A blob pulled through that no cached manifest references.
        r = client.request("GET", f"/v2/{local}/blobs/{stray_digest}")
        assert r.status == 200 and r.data == stray
        policy = tmp_path / "gc.yaml"
        policy.write_text(json.dumps({"gc": {"retention": ["up/** keep_last=1"]}}))

        report = _gc(server, policy)

        gone = {i["name"] for i in report["items"] if i["kind"] in ("blob", "tag")}
        # Retention removed the older cached tag; its image and the stray blob went.
        assert "v0" in gone and "v1" not in gone
        for digest in (*_digests(old), stray_digest):
            assert digest in gone, digest
            assert not _stored(server, digest), digest
        # What the remaining cached tag references stayed, and is served from the cache.
        for digest in _digests(new):
            assert digest not in gone and _stored(server, digest), digest
        fetched = {d: front.count("GET", f"/v2/{name}/blobs/{d}") for d in _digests(new)[1:]}
        assert _pull(client, local, "v1", new) == ["dockyard; hit"] * len(fetched)
        assert all(front.count("GET", f"/v2/{name}/blobs/{d}") == n
                   for d, n in fetched.items())
        status, _, tags = client.json("GET", f"/v2/{local}/tags/list")
        assert status == 200 and tags["tags"] == ["v1"]
        # The collected tag is pulled through again, from the upstream.
        assert "dockyard; hit" not in _pull(client, local, "v0", old)

        # Usage marks the mirrored repository as a cache. `--data-dir` alone reads
        # the configuration file `serve` runs with (its upstreams), as gc does.
        pushed = "own/app"
        client.push_image(pushed, "v1")
        out = _cli(server, "usage", "--json")
        assert out.returncode == 0, out.stderr
        usage = json.loads(out.stdout)
        assert usage["repositories"][local]["cached_from"] == front.url
        assert "cached_from" not in usage["repositories"][pushed]
        assert usage["registry"]["cached_bytes"] == \
            usage["repositories"][local]["tagged_bytes"] > 0
        table = _cli(server, "usage", "--cached").stdout
        assert f"{local} (cached)" in table and f"{pushed} (cached)" not in table
    finally:
        server.stop()
