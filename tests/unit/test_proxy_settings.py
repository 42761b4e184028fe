"""The pull-through cache's configuration, prefix matching and challenge parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.storage.proxy.settings import upstream_map
from services.storage.proxy.upstream import parse_challenge
from shared import config


def _map(upstreams, environ=None):
    return upstream_map({"proxy": {"upstreams": upstreams}}, environ or {})


def test_longest_prefix_wins_and_matches_whole_components() -> None:
    m = _map([{"prefix": "hub", "url": "https://registry-1.docker.io"},
              {"prefix": "hub/special", "url": "http://127.0.0.1:1"},
              {"prefix": "ghcr", "url": "https://ghcr.io"}])
    assert m.match("hub/library/busybox").url == "https://registry-1.docker.io"
    assert m.match("hub/special/x").url == "http://127.0.0.1:1"
    assert m.match("hubble/x") is None
    assert m.match("hub") is None
    assert m.match("ghcr/owner/app").remote_name("ghcr/owner/app") == "owner/app"


def test_docker_hub_library_rule() -> None:
    m = _map([{"prefix": "hub", "url": "https://registry-1.docker.io"},
              {"prefix": "other", "url": "https://example.org"}])
    hub = m.match("hub/busybox")
    assert hub.docker_hub
    assert hub.remote_name("hub/busybox") == "library/busybox"
    assert hub.remote_name("hub/bitnami/redis") == "bitnami/redis"
    assert m.match("other/busybox").remote_name("other/busybox") == "busybox"


def test_the_empty_prefix_mirrors_everything_else() -> None:
    m = _map([{"prefix": "", "url": "https://registry-1.docker.io"},
              {"prefix": "ghcr", "url": "https://ghcr.io"}])
    assert m.match("ghcr/a/b").url == "https://ghcr.io"
    mirror = m.match("library/busybox")
    assert mirror.label == "mirror"
    assert mirror.remote_name("library/busybox") == "library/busybox"
    assert mirror.remote_name("busybox") == "library/busybox"


def test_credentials_from_the_environment() -> None:
    m = _map([{"prefix": "hub", "url": "https://registry-1.docker.io",
               "username": "_env:HUB_USER", "password": "_env:HUB_PASS:fallback"}],
             {"HUB_USER": "alice"})
    u = m.match("hub/x")
    assert (u.username, u.password) == ("alice", "fallback")


@pytest.mark.parametrize("entry, message", [
    ({"prefix": "hub"}, "missing url"),
    ({"prefix": "hub", "url": "ftp://x"}, "url"),
    ({"prefix": "hub", "url": "https://x/path"}, "url"),
    ({"prefix": "Hub", "url": "https://x"}, "prefix"),
    ({"prefix": "hub", "url": "https://x", "tag_ttl": -1}, "tag_ttl"),
    ({"prefix": "hub", "url": "https://x", "username": "u"}, "username and password"),
    ({"prefix": "hub", "url": "https://x", "colour": "red"}, "unknown key"),
    ({"prefix": "hub", "url": "https://x", "docker_hub": "yes"}, "docker_hub"),
])
def test_bad_upstreams_are_refused_by_config_load(tmp_path, entry, message) -> None:
    path = tmp_path / "c.yml"
    import json

    path.write_text(json.dumps({"proxy": {"upstreams": [entry]}}))
    with pytest.raises(config.ConfigError, match=message):
        config.load(path, {})


def test_a_prefix_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        _map([{"prefix": "a", "url": "https://x"}, {"prefix": "a", "url": "https://y"}])


def test_challenges() -> None:
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",'
                        'service="registry.docker.io",scope="repository:library/x:pull"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/x:pull"}
    assert parse_challenge('Basic realm="Registry Realm"').scheme == "basic"
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge('Bearer realm="unterminated') is None


@given(st.text(max_size=200))
def test_any_challenge_header_parses_or_is_none(header: str) -> None:
    c = parse_challenge(header)
    assert c is None or c.scheme in ("bearer", "basic")
