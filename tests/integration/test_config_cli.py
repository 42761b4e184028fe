"""`dockyard config check FILE`: the effective configuration, or an error naming the key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from shared.config import SCHEMA
from tests.support.processes import VENV_BIN


def check(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: a DOCKYARD_* variable of the caller must not leak in.
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    return subprocess.run([str(VENV_BIN / "dockyard"), "config", "check", str(path)],
                          capture_output=True, text=True, timeout=30, env={**base, **env})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dockyard.yml"
    path.write_text(text)
    return path


def test_valid_file_prints_the_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  threads: 4\n  delete_enabled: false\n"
                           "index:\n  redis:\n    key_prefix: 'x:'\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["storage"]["threads"] == 4
    assert cfg["storage"]["delete_enabled"] is False
    assert cfg["index"]["redis"]["key_prefix"] == "x:"
    # Defaults fill in everything the file leaves out.
    assert cfg["router"]["listen"] == "127.0.0.1:5000"
    assert set(cfg) == set(SCHEMA)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    result = check(write(tmp_path, ""))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["storage"]["threads"] == 16


def test_unknown_key_is_named(tmp_path: Path) -> None:
    result = check(write(tmp_path, "storage:\n  bogus: 1\n"))
    assert result.returncode != 0
    assert "storage.bogus" in result.stderr
    assert "Traceback" not in result.stderr
    result = check(write(tmp_path, "nosuchsection: {}\n"))
    assert result.returncode != 0
    assert "nosuchsection" in result.stderr


def test_wrong_type_names_the_path(tmp_path: Path) -> None:
    for text, path in (("storage:\n  threads: many\n", "storage.threads"),
                       ("index:\n  redis:\n    url: [1, 2]\n", "index.redis.url"),
                       ("log:\n  access: maybe\n", "log.access"),
                       ("storage:\n  threads: 0\n", "storage.threads"),
                       ("log:\n  level: loud\n", "log.level"),
                       ("router:\n  listen: nowhere\n", "router.listen"),
                       ("storage: [1]\n", "storage")):
        result = check(write(tmp_path, text))
        assert result.returncode != 0, text
        assert path in result.stderr, (text, result.stderr)
        assert "Traceback" not in result.stderr


def test_not_yaml_or_missing_file(tmp_path: Path) -> None:
    result = check(write(tmp_path, "storage: [unclosed\n"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    result = check(tmp_path / "missing.yml")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  threads: 4\n")
    result = check(path, DOCKYARD_STORAGE_THREADS="7", DOCKYARD_INDEX_REDIS_URL="redis://h:1/2")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["storage"]["threads"] == 7
    assert cfg["index"]["redis"]["url"] == "redis://h:1/2"
    result = check(path, DOCKYARD_STORAGE_THREADS="lots")
    assert result.returncode != 0
    assert "storage.threads" in result.stderr
    assert "DOCKYARD_STORAGE_THREADS" in result.stderr


def test_legacy_env_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  threads: _env:MY_THREADS:3\n"
                           "  root: _env:MY_ROOT:/srv/registry\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["storage"]["threads"] == 3
    assert cfg["storage"]["root"] == "/srv/registry"
    result = check(path, MY_THREADS="9", MY_ROOT="/data")
    cfg = yaml.safe_load(result.stdout)
    assert cfg["storage"]["threads"] == 9
    assert cfg["storage"]["root"] == "/data"
    result = check(path, MY_THREADS="nine")
    assert result.returncode != 0
    assert "storage.threads" in result.stderr
