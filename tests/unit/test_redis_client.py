"""Redis sources from configuration: URLs, Sentinel URLs and the index.redis keys."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from shared import config, redis_client
from shared.redis_client import RedisSource, ReplicationUnconfirmed


def test_plain_url_is_kept() -> None:
    assert redis_client.from_url("redis://h:1/2") == RedisSource(url="redis://h:1/2")
    assert redis_client.from_url("").url == redis_client.DEFAULT_URL


def test_sentinel_url() -> None:
    s = redis_client.from_url(
        "redis+sentinel://:p%40ss@10.0.0.1:26379,sentinel-b,[::1]:26380/main/3"
        "?sentinel_password=sp")
    assert s.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert (s.master_name, s.password, s.sentinel_password, s.db) == ("main", "p@ss", "sp", 3)
    assert s.uses_sentinel
    assert "p@ss" not in repr(s) and "p@ss" not in s.describe()


@pytest.mark.parametrize("url", [
    "redis+sentinel://h:26379",            # no master name
    "redis+sentinel:///main",              # no sentinel
    "redis+sentinel://h:0/main",           # bad port
    "redis+sentinel://h:1/main/0/extra",   # too many parts
])
def test_bad_sentinel_urls(url: str) -> None:
    with pytest.raises(ValueError):
        redis_client.from_url(url)


names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)


@given(hosts=st.lists(st.tuples(names, st.integers(1, 65535)), min_size=1, max_size=4),
       master=names, password=st.text(max_size=20), sentinel_password=st.text(max_size=20),
       db=st.integers(0, 15))
def test_to_url_round_trips(hosts, master, password, sentinel_password, db) -> None:
    source = RedisSource(sentinels=tuple(hosts), master_name=master, password=password,
                         sentinel_password=sentinel_password, db=db)
    assert redis_client.from_url(redis_client.to_url(source)) == source


def test_section_prefers_sentinels() -> None:
    section = {"url": "redis://ignored:1/0", "sentinels": ["a:1", "b"], "master_name": "m",
               "password": "pw", "sentinel_password": "", "db": 1}
    s = redis_client.from_section(section)
    assert s.sentinels == (("a", 1), ("b", 26379)) and s.password == "pw" and s.db == 1
    plain = redis_client.from_section({**section, "sentinels": []})
    assert plain.url == "redis://ignored:1/0" and plain.password == "pw"


def test_config_keys_and_validation(tmp_path) -> None:
    cfg = config.load(environ={
        "DOCKYARD_INDEX_REDIS_SENTINELS": "s1:26379,s2:26379",
        "DOCKYARD_INDEX_REDIS_MIN_REPLICAS_ACK": "1",
        "DOCKYARD_ROUTER_EVENTS_URL": "redis+sentinel://s1:26379/dockyard",
    })
    assert cfg["index"]["redis"]["sentinels"] == ["s1:26379", "s2:26379"]
    assert cfg["index"]["redis"]["min_replicas_ack"] == 1
    with pytest.raises(config.ConfigError, match=r"index\.redis\.sentinels"):
        config.load(environ={"DOCKYARD_INDEX_REDIS_SENTINELS": "s1:notaport"})
    with pytest.raises(config.ConfigError, match=r"storage\.events_url"):
        config.load(environ={"DOCKYARD_STORAGE_EVENTS_URL": "redis+sentinel://s1"})


@pytest.mark.parametrize(("error", "retryable"), [
    (redis.exceptions.ConnectionError("gone"), True),
    (redis.exceptions.TimeoutError("slow"), True),
    (redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica"),
     True),
    (redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
    (redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"), True),
    (ReplicationUnconfirmed("0 of 1"), True),
    (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), False),
    (redis.exceptions.ResponseError("ERR syntax error"), False),
])
def test_retryable(error: Exception, retryable: bool) -> None:
    assert redis_client.is_retryable(error) is retryable


def test_serve_with_sentinels_starts_no_private_redis(tmp_path, monkeypatch) -> None:
    """`dockyard serve` given sentinels uses them, for the index and both subscribers."""
    from services import supervisor

    # `plan` exports the internal secret's file to its children through os.environ:
    # in this process it must not outlive the test (later registries would share it).
    # (Set, then removed: monkeypatch then restores the variable's absence too.)
    monkeypatch.setenv("DOCKYARD_INTERNAL_SECRET_FILE", "")
    monkeypatch.delenv("DOCKYARD_INTERNAL_SECRET_FILE")
    from services.cli import CHILD_REDIS_URL

    cfg = config.load(environ={"DOCKYARD_INDEX_REDIS_SENTINELS": "s1:26379,s2:26380",
                               "DOCKYARD_INDEX_REDIS_PASSWORD": "redis-s3cret",
                               "DOCKYARD_ROUTER_PROCESSES": "1"})
    # Port 0: `plan` binds the public socket itself.
    children, addresses = supervisor.plan(cfg, None, "127.0.0.1", 0, tmp_path)
    assert [c.name for c in children] == ["index", "storage", "router"]
    source = redis_client.from_url(addresses["redis"])
    assert source.sentinels == (("s1", 26379), ("s2", 26380)) and source.password == "redis-s3cret"
    for child in children:
        # In the environment, never on the command line, which any local user can
        # read: the URL carries the password.
        assert child.env[CHILD_REDIS_URL] == addresses["redis"]
        assert "--redis-url" not in child.argv and "--events-url" not in child.argv
        assert not any("redis-s3cret" in arg for arg in child.argv), child.argv
