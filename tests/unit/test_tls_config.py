"""The haproxy configuration `serve` writes for TLS (services/tls.py), checked by haproxy
itself (`haproxy -c`), and the certificate file it is given."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from services import tls
from shared import config
from tests.support.tls_certs import TestCA

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.mark.parametrize(("public", "client_ca"), [
    ("127.0.0.1:5443", False), ("0.0.0.0:443", True), (":::5443", False),
])
def test_haproxy_accepts_the_configuration(tmp_path: Path, ca: TestCA, public: str,
                                           client_ca: bool) -> None:
    cert, key = ca.issue("server")
    env = {"DOCKYARD_TLS_CERT": str(cert), "DOCKYARD_TLS_KEY": str(key),
           "DOCKYARD_HTTP_MAX_HEADER_SIZE": "131072"}
    if client_ca:
        env["DOCKYARD_TLS_CLIENT_CA"] = str(ca.ca_path)
    cfg = config.load(None, environ=env)
    terminator = tls.Terminator(cfg, tmp_path, public, "127.0.0.1:5001")
    text = terminator.cfg.read_text()
    assert f"bind {public} ssl crt {terminator.pem}" in text
    assert ("verify required" in text) is client_ca
    assert "http-request del-header X-Forwarded-For" in text
    assert "tune.bufsize 133120" in text  # the largest header block fits
    check = subprocess.run([str(HAPROXY), "-c", "-f", str(terminator.cfg)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # The one file haproxy reads holds the chain and the key, readable by us only.
    assert terminator.pem.stat().st_mode & 0o077 == 0
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(terminator.pem)


def test_a_certificate_without_its_key_is_not_installed(tmp_path: Path, ca: TestCA) -> None:
    cert, _ = ca.issue("one")
    _, other = ca.issue("two")
    target = tmp_path / "server.pem"
    with pytest.raises(ssl.SSLError):
        tls.build_pem(str(cert), str(other), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either
