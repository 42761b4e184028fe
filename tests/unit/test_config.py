"""shared/config.load: any YAML mapping (and any environment) either loads into a
complete, well-typed configuration or raises ConfigError naming the key's path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from shared import config
from tests.unit.props import PROPERTY, nasty_text

LEAVES = [(path, key) for path, key in config._leaves(config.SCHEMA)]
PATHS = [".".join(p) for p, _ in LEAVES]
SECTIONS = sorted({".".join(p[:i]) for p, _ in LEAVES for i in range(1, len(p))})

yaml_scalars = (st.none() | st.booleans() | st.integers(-10, 10**6)
                | st.floats(allow_nan=False, allow_infinity=False) | nasty_text
                | st.sampled_from(["127.0.0.1:5000", "http://127.0.0.1:1", "redis://x:1/0",
                                   "info", "json", "always", "_env:NOPE", "_env:NOPE:7",
                                   "_env:NOPE:[", "_env:NOPE:{a: 1}", "_env:HOME",
                                   "_env::", "1,2", ""]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)


@st.composite
def config_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A nested mapping whose keys are mostly the schema's, with a few strangers."""
    doc: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 6))):
        path = draw(st.sampled_from(PATHS + SECTIONS) | st.text(min_size=1, max_size=8)
                    .filter(lambda s: "." not in s))
        parts = path.split(".")
        if draw(st.integers(0, 6)) == 0:
            parts[-1] = parts[-1] + "x"
        node = doc
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = draw(yaml_values)
    return doc


def assert_names_a_path(error: config.ConfigError, candidates: list[str]) -> None:
    message = str(error)
    # A list-valued key (auth.external, notifications.endpoints, ...) may be named
    # down to the item at fault: "auth.external[0].issuer: ...".
    assert any(message.startswith((f"{c}: ", f"{c} (from "))
               or re.match(re.escape(c) + r"\[\d+\]", message)
               for c in [*candidates, "(top level)"]), message


def assert_well_typed(cfg: dict[str, Any]) -> None:
    for path, key in LEAVES:
        value: Any = cfg
        for part in path:
            value = value[part]
        expected = key.type
        assert isinstance(value, expected), (path, value)
        if expected is int:
            assert not isinstance(value, bool)
        if key.choices:
            assert value in key.choices
        if key.minimum is not None:
            assert value >= key.minimum


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("config") / "dockyard.yml"


def every_path(doc: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out.append(path)
            out += every_path(v, path) if isinstance(v, dict) else []
    return out


@PROPERTY
@given(config_docs())
@example({"storage": {"threads": "_env:NOPE:["}})
@example({"storage": {"bogus": 1}})
@example({"log": [1]})
@example({"index": {"redis": "x"}})
@example({"storage": {"index_urls": "http://a:1, http://b:2"}})
@example({"storage": {"index_urls": [1]}})
@example({1: 2})
@example({"auth": {"external": [{}]}})
def test_any_mapping_loads_or_names_the_key(config_file: Path, doc: dict[str, Any]) -> None:
    config_file.write_text(yaml.safe_dump(doc))
    try:
        cfg = config.load(config_file, environ={})
    except config.ConfigError as e:
        assert_names_a_path(e, every_path(doc) + PATHS)
        return
    assert_well_typed(cfg)
    # The exact dump (what a GC child process runs with) is itself a valid
    # configuration file, and the same configuration.
    config_file.write_text(config.dump(cfg, reveal_secrets=True))
    assert config.load(config_file, environ={}) == cfg


@PROPERTY
@given(st.dictionaries(st.sampled_from([config.env_name(p) for p, _ in LEAVES]),
                       nasty_text | st.sampled_from(["[", "{", "]", "- a", ": b", "'", "1",
                                                     "true", "_env:X:[", "*a"]),
                       max_size=3))
@example({"DOCKYARD_STORAGE_THREADS": "["})
@example({"DOCKYARD_STORAGE_THREADS": "_env:X:["})
@example({"DOCKYARD_STORAGE_THREADS": "*alias"})
def test_any_environment_loads_or_names_the_key(environ: dict[str, str]) -> None:
    try:
        cfg = config.load(None, environ=environ)
    except config.ConfigError as e:
        assert_names_a_path(e, PATHS)
        # An error that came from an environment variable says which one.
        where = str(e).split(":", 1)[0]
        if "(from " in where:
            assert re.search(r"\(from DOCKYARD_[A-Z0-9_]+\)", where)
        return
    assert_well_typed(cfg)


def test_defaults_load() -> None:
    cfg = config.load(None, environ={})
    assert_well_typed(cfg)
    assert cfg["storage"]["threads"] == 16


def test_precedence_file_then_environment(config_file: Path) -> None:
    config_file.write_text("storage:\n  threads: 4\n  upload_max_age: 120\n")
    cfg = config.load(config_file, environ={"DOCKYARD_STORAGE_THREADS": "9"})
    assert cfg["storage"]["threads"] == 9
    assert cfg["storage"]["upload_max_age"] == 120


def test_legacy_env_syntax(config_file: Path) -> None:
    config_file.write_text("storage:\n  threads: _env:T:3\n  delete_enabled: _env:D\n")
    assert config.load(config_file, environ={"D": "false"})["storage"]["threads"] == 3
    cfg = config.load(config_file, environ={"T": "5", "D": "true"})
    assert (cfg["storage"]["threads"], cfg["storage"]["delete_enabled"]) == (5, True)
    with pytest.raises(config.ConfigError, match=r"^storage\.delete_enabled"):
        config.load(config_file, environ={})


def test_string_keys_take_environment_text_verbatim() -> None:
    cfg = config.load(None, environ={"DOCKYARD_INDEX_REDIS_KEY_PREFIX": "app:",
                                     "DOCKYARD_STORAGE_ROOT": "on"})
    assert cfg["index"]["redis"]["key_prefix"] == "app:"
    assert cfg["storage"]["root"] == "on"


def test_list_from_a_comma_separated_string(config_file: Path) -> None:
    cfg = config.load(None, environ={"DOCKYARD_ROUTER_STORAGE_URLS":
                                     "http://127.0.0.1:1, http://127.0.0.1:2"})
    assert cfg["router"]["storage_urls"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]


@pytest.mark.parametrize(("text", "path"), [
    ("storage:\n  bogus: 1\n", "storage.bogus"),
    ("storage:\n  threads: x\n", "storage.threads"),
    ("index:\n  redis:\n    url: http://x\n", "index.redis.url"),
    ("router:\n  storage_urls: [ftp://x]\n", "router.storage_urls"),
    ("storage:\n  upload_max_age: 59\n", "storage.upload_max_age"),
    ("- a\n", "(top level)"),
])
def test_errors_name_the_path(config_file: Path, text: str, path: str) -> None:
    config_file.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(config_file, environ={})
    assert str(e.value).startswith(path + ":")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError):
        config.load(tmp_path / "missing.yml", environ={})
    bad = tmp_path / "bad.yml"
    bad.write_text("a: [\n")
    with pytest.raises(config.ConfigError):
        config.load(bad, environ={})


@pytest.mark.parametrize("secret", ["0123", "yes", "12:30", "*alias", "&x", "!tag", "[1]"])
def test_an_env_reference_of_a_string_key_is_taken_as_written(tmp_path: Path,
                                                              secret: str) -> None:
    """`_env:` of a string key (a password, an S3 secret) is the variable's text:
    never read as YAML, so no secret is changed (octal, base 60) or refused."""
    f = tmp_path / "c.yml"
    f.write_text("index: {redis: {password: '_env:PW'}}\n"
                 "storage: {s3: {secret_key: '_env:S3S'}, threads: '_env:N'}\n")
    cfg = config.load(f, environ={"PW": secret, "S3S": secret, "N": "4"})
    assert cfg["index"]["redis"]["password"] == secret
    assert cfg["storage"]["s3"]["secret_key"] == secret
    assert cfg["storage"]["threads"] == 4  # a typed key is still read as YAML
