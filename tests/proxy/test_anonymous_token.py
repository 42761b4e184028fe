"""An upstream that wants a token even for anonymous pulls, as Docker Hub does for its
public images: with no credentials configured, dockyard asks the token endpoint
anonymously for the repository's pull scope, and reuses the token until it expires."""

from __future__ import annotations

import uuid

from tests.proxy.conftest import proxy_dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Pusher, TokenServer, UpstreamRegistry


def test_an_anonymous_token_pulls_through_a_token_upstream(tmp_path) -> None:
    # No users: the token server grants any scope to anyone, as Hub does for public pulls.
    tokens = TokenServer(tmp_path / "tokens").start()
    upstream = UpstreamRegistry(tmp_path / "upstream", tokens=tokens).start()
    name = f"team/app-{uuid.uuid4().hex[:8]}"
    image = Pusher(upstream.url, tokens.token("admin", f"repository:{name}:pull,push")
                   ).image(name, "v1", layers=[b"a" * 3000, b"b" * 4000])
    server = proxy_dockyard(tmp_path / "dy", [{"prefix": "hub", "url": upstream.url,
                                               "tag_ttl": 0}]).start()
    try:
        client = RegistryClient(server.url)
        issued = tokens.issued
        for _ in range(3):
            r = client.get_manifest(f"hub/{name}", "v1")
            assert r.status == 200 and r.data == image["manifest"], (r.status, r.data[:200])
        for digest, data in image["blobs"].items():
            r = client.request("GET", f"/v2/hub/{name}/blobs/{digest}")
            assert r.status == 200 and r.data == data
        # One anonymous token for the repository's pull scope, reused by every request
        # (three tag checks with a TTL of 0, the manifest and both blobs).
        assert tokens.issued == issued + 1
    finally:
        server.stop()
        upstream.stop()
        tokens.stop()
