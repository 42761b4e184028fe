"""The loud warning of `dockyard serve` on a non-loopback address without authentication
(services/exposure.py), read from the configuration without knowing the auth keys."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from services import exposure
from shared import config
from tests.support.processes import VENV_BIN, free_port


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "[2001:db8::1]"])
def test_beyond_loopback_without_auth_warns(host: str) -> None:
    text = exposure.warning(config.load(None, environ={}), host)
    assert text is not None and "NO AUTHENTICATION" in text and host in text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_does_not_warn(host: str) -> None:
    assert exposure.warning(config.load(None, environ={}), host) is None


@pytest.mark.parametrize(("env", "configured"), [
    ({}, False),
    ({"DOCKYARD_AUTH_CREDENTIAL_CACHE_TTL": "60"}, False),  # a tuning knob is not auth
    ({"DOCKYARD_AUTH_MODE": "basic"}, False),  # nor is the kind of challenge
    ({"DOCKYARD_AUTH_REALM": "dockyard"}, False),  # the default, spelled out
    ({"DOCKYARD_AUTH_HTPASSWD": "/etc/dockyard/htpasswd"}, True),
    ({"DOCKYARD_AUTH_EXTERNAL": "[{issuer: https://auth.example.com, keys: a.pem}]"}, True),
    ({"DOCKYARD_ACCESS": "[{repositories: ['**'], anonymous: [pull]}]"}, True),
])
def test_any_auth_setting_counts_as_configured(env: dict[str, str], configured: bool) -> None:
    cfg: dict[str, Any] = config.load(None, environ=env)
    assert exposure.auth_configured(cfg) is configured
    assert (exposure.warning(cfg, "0.0.0.0") is None) is configured


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
