"""The notifications section: endpoints checked at load with errors that name the
endpoint and key, `_env:` secrets, filters, and secrets kept out of `config check`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import config
from shared.notify_config import matches, redacted_url


def load(tmp_path: Path, endpoints: Any, environ: dict[str, str] | None = None,
         **section: Any) -> dict[str, Any]:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"notifications": {"endpoints": endpoints, **section}}))
    return config.load(path, environ=environ or {})


def test_an_endpoint_gets_every_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, [{"name": "ci", "url": "https://ci.example/hook"}])
    (e,) = cfg["notifications"]["endpoints"]
    assert e == {"name": "ci", "url": "https://ci.example/hook", "headers": {}, "timeout": 5.0,
                 "secret": "", "backoff_initial": 1.0, "backoff_max": 60.0,
                 "max_age": 86400.0, "batch_size": 32, "actions": [], "repositories": [],
                 "ignored_media_types": []}
    assert cfg["notifications"]["manifest_pull"] is False


def test_env_secrets_and_header_lists(tmp_path: Path) -> None:
    cfg = load(tmp_path, [{"name": "ci", "url": "http://127.0.0.1:9/x",
                           "secret": "_env:HOOK_SECRET",
                           "headers": {"Authorization": "_env:HOOK_TOKEN:none",
                                       "X-Team": ["a", "b"]}}],
               environ={"HOOK_SECRET": "s3"})
    (e,) = cfg["notifications"]["endpoints"]
    assert e["secret"] == "s3"
    assert e["headers"] == {"Authorization": ["none"], "X-Team": ["a", "b"]}


def test_endpoints_from_the_environment(tmp_path: Path) -> None:
    cfg = config.load(None, environ={
        "DOCKYARD_NOTIFICATIONS_ENDPOINTS": '[{name: a, url: "http://h:1/p", timeout: 2}]'})
    assert cfg["notifications"]["endpoints"][0]["timeout"] == 2.0


@pytest.mark.parametrize(("endpoints", "message"), [
    ("x", "notifications.endpoints[0]: expected a mapping"),
    ([{"url": "http://h/"}], "notifications.endpoints[0].name: required"),
    ([{"name": "a b", "url": "http://h/"}], ".name: required, 1-64 of"),
    ([{"name": "a"}], "notifications.endpoints[a].url: required"),
    ([{"name": "a", "url": "ftp://h/"}], "notifications.endpoints[a].url: not an http"),
    ([{"name": "a", "url": "http:///nohost"}], ".url: not an http"),
    ([{"name": "a", "url": "http://h:99999/"}], ".url: not an http"),
    ([{"name": "a", "url": "http://h/", "headers": {"Bad Name": "x"}}],
     "[a].headers: not a valid header name: 'Bad Name'"),
    ([{"name": "a", "url": "http://h/", "headers": {"X-A": "x\r\nInjected: 1"}}],
     "[a].headers.X-A: a header value may not hold a line break"),
    ([{"name": "a", "url": "http://h/", "headers": {"X-A": "naïve ☃"}}],
     "[a].headers.X-A: a header value must be Latin-1 text"),
    ([{"name": "a", "url": "http://h/", "headers": {"Content-Type": "x"}}],
     "headers.Content-Type: set by dockyard itself"),
    ([{"name": "a", "url": "http://h/", "timeout": "soon"}], "[a].timeout: expected a number"),
    ([{"name": "a", "url": "http://h/", "timeout": 0}], "[a].timeout: must be at least"),
    ([{"name": "a", "url": "http://h/", "batch_size": 1.5}], "batch_size: expected an integer"),
    ([{"name": "a", "url": "http://h/", "actions": ["push", "tag"]}],
     "[a].actions: 'tag' is not one of push, pull, mount, delete"),
    ([{"name": "a", "url": "http://h/", "backoff_initial": 10, "backoff_max": 5}],
     "[a].backoff_max: must be at least backoff_initial"),
    ([{"name": "a", "url": "http://h/", "retries": 3}], "[a].retries: unknown key"),
    ([{"name": "a", "url": "http://h/"}, {"name": "a", "url": "http://g/"}],
     "[a].name: two endpoints are named 'a'"),
])
def test_bad_endpoints_are_named_in_the_error(tmp_path: Path, endpoints: Any,
                                              message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        load(tmp_path, endpoints)
    assert message in str(info.value)


def test_claim_idle_must_outlast_a_post(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"notifications\.claim_idle: must be at least"):
        load(tmp_path, [{"name": "a", "url": "http://h/", "timeout": 20}], claim_idle=30)


def test_config_check_output_hides_secrets(tmp_path: Path) -> None:
    # The secret must not be a word the dump has anyway (storage.s3 is a section).
    cfg = load(tmp_path, [{"name": "a", "url": "http://h/", "secret": "s3cr3t",
                           "headers": {"Authorization": "Bearer t0ken"}}])
    text = config.dump(cfg)
    assert "s3cr3t" not in text and "t0ken" not in text
    assert "<redacted>" in text


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "url", "headers", "timeout", "secret", "actions",
                         "repositories", "batch_size", "max_age", "x"]), inner, max_size=5),
    max_leaves=12))
def test_any_value_loads_or_is_a_config_error(value: Any) -> None:
    with contextlib.suppress(config.ConfigError):
        config.load(None, environ={"DOCKYARD_NOTIFICATIONS_ENDPOINTS": yaml.safe_dump(value)})


def _endpoint(**filters: Any) -> dict[str, Any]:
    return {"actions": [], "repositories": [], "ignored_media_types": [], **filters}


def _event(action: str, repo: str, media_type: str = "m") -> dict[str, Any]:
    return {"action": action, "target": {"repository": repo, "mediaType": media_type}}


def test_filters_by_action_repository_glob_and_media_type() -> None:
    e = _endpoint(actions=["push", "delete"], repositories=["team-a/*", "base"],
                  ignored_media_types=["application/octet-stream"])
    assert matches(e, _event("push", "team-a/app"))
    assert matches(e, _event("delete", "base"))
    assert not matches(e, _event("pull", "team-a/app"))
    assert not matches(e, _event("push", "team-b/app"))
    assert not matches(e, _event("push", "TEAM-A/app"))
    assert not matches(e, _event("push", "team-a/app", "application/octet-stream"))
    # The globs of access rules: * stays within one path segment, ** crosses it.
    assert not matches(e, _event("push", "team-a/tools/lint"))
    assert matches(_endpoint(repositories=["team-a/**"]), _event("push", "team-a/tools/lint"))
    assert matches(_endpoint(), _event("mount", "anything/at/all"))


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…"),
    ("http://user:pw@ci.example:8080/hook?token=abc", "http://ci.example:8080/…"),
    ("http://ci.example/", "http://ci.example/"),
    ("http://[::1/hook", "(an unparsable URL)"),
])
def test_redacted_url_keeps_no_secret(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_a_bad_url_error_does_not_repeat_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"notifications": {"endpoints": [
        {"name": "a", "url": "ftp://user:hunter2@h/path-secret"}]}}))
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    assert "hunter2" not in str(e.value) and "path-secret" not in str(e.value)


def test_config_check_output_hides_the_internal_secret_and_redis_passwords(
        tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({
        "internal": {"secret": "internal-s3cret-0123456789",
                     "also_accept": ["old-s3cret-0123456789"]},
        "index": {"redis": {"url": "redis://:redispw@127.0.0.1:6379/0"}},
        "router": {"events_url": "redis://default:eventspw@127.0.0.1:6379/0"},
    }))
    cfg = config.load(str(path), environ={})
    text = config.dump(cfg)
    for secret in ("internal-s3cret", "old-s3cret", "redispw", "eventspw"):
        assert secret not in text, secret
    assert "redis://:<redacted>@127.0.0.1:6379/0" in text
    assert "redis://default:<redacted>@127.0.0.1:6379/0" in text
    exact = config.dump(cfg, reveal_secrets=True)
    assert "internal-s3cret-0123456789" in exact and "redispw" in exact
