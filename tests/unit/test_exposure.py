"""The loud warning of `dockyard serve` on a non-loopback address without authentication
(services/exposure.py), read from the configuration without knowing the auth keys."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from services import exposure
from shared import config
from shared.config import Key
from tests.support.processes import VENV_BIN, free_port


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "[2001:db8::1]"])
def test_beyond_loopback_without_auth_warns(host: str) -> None:
    text = exposure.warning(config.load(None, environ={}), host)
    assert text is not None and "NO AUTHENTICATION" in text and host in text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_does_not_warn(host: str) -> None:
    assert exposure.warning(config.load(None, environ={}), host) is None


@pytest.mark.parametrize(("text", "configured"), [
    ("", False),
    ("auth:\n  mode: basic\n  credential_cache_ttl: 60\n", False),  # no one to log in
    ("auth:\n  htpasswd: /etc/dockyard/htpasswd\n", True),
    ("auth:\n  external:\n    - {issuer: https://id.example.com, keys: /k.pem}\n", True),
    ("access:\n  - repositories: ['public/**']\n    anonymous: [pull]\n", True),
])
def test_authentication_or_access_rules_silence_it(tmp_path: Path, text: str,
                                                   configured: bool) -> None:
    path = tmp_path / "dockyard.yml"
    path.write_text(text)
    cfg = config.load(path, environ={})
    assert exposure.auth_configured(cfg) is configured
    assert (exposure.warning(cfg, "0.0.0.0") is None) is configured


@pytest.mark.parametrize(("section", "configured"), [
    ({"htpasswd": "", "realm": "dockyard", "cache_ttl": 300}, False),
    ({"htpasswd": "", "realm": "dockyard", "cache_ttl": 60}, False),  # a tuning knob
    ({"htpasswd": "/etc/dockyard/htpasswd", "realm": "dockyard"}, True),
    ({"token": {"issuer": "https://auth.example.com", "keys": []}}, True),
])
def test_without_the_auth_module_any_auth_setting_counts(
        monkeypatch: pytest.MonkeyPatch, section: dict[str, Any], configured: bool) -> None:
    monkeypatch.setitem(config.SCHEMA, "auth", {
        "htpasswd": Key(str, "", "htpasswd file"),
        "realm": Key(str, "dockyard", "challenge realm"),
        "cache_ttl": Key(int, 300, "seconds"),
        "token": {"issuer": Key(str, "", "issuer"), "keys": Key(list, [], "keys")},
    })
    assert exposure._any_auth_setting({"auth": section}) is configured


def test_serve_logs_the_warning_loudly(tmp_path: Path) -> None:
    def serve(host: str) -> subprocess.CompletedProcess[str]:
        # A secret too short to use makes `serve` stop right after its checks, before
        # anything listens: the warning comes first.
        return subprocess.run(
            [str(VENV_BIN / "dockyard"), "serve", "--host", host, "--port", str(free_port()),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60,
            env={"DOCKYARD_INTERNAL_SECRET": "short", "PATH": "/usr/bin:/bin"})

    loud = serve("0.0.0.0")
    assert loud.returncode != 0 and "internal.secret" in loud.stderr
    lines = [line for line in loud.stderr.splitlines() if "WARNING" in line]
    assert any("NO AUTHENTICATION" in line and "0.0.0.0" in line for line in lines), loud.stderr
    assert sum(exposure.BANNER in line for line in lines) == 2
    quiet = serve("127.0.0.1")
    assert quiet.returncode != 0 and "NO AUTHENTICATION" not in quiet.stderr
