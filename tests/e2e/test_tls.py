"""Scenario 11: real clients over HTTPS, trusting only a CA the test makes.

`dockyard serve` gets a certificate from that CA; each client is given the CA
the way its users give it, with no "insecure registry" setting anywhere, and
is first shown to refuse the registry without it, which proves it checks:

- docker: the CA in ``/etc/docker/certs.d/HOST:PORT/ca.crt``. dockerd treats
  127.0.0.0/8 and ::1 as insecure registries of its own accord (it would then
  skip the certificate check), so docker reaches dockyard as ``0.0.0.0:PORT``:
  not in those ranges, so a secure registry, and still this machine (Linux
  sends a connection to 0.0.0.0 to the local host).
- podman and skopeo: ``--cert-dir`` with ``--tls-verify=true``;
- ctr: ``--tlscacert`` (and ``0.0.0.0:PORT`` too: ctr speaks plain HTTP to
  localhost and 127.0.0.1 unless told otherwise);
- ORAS (Python SDK): the CA bundle as ``tls_verify``.

And with access control on, over HTTPS: docker login, podman login, skopeo
--creds, ctr --user and ORAS basic auth push (and pull) where the user may, and
a user without push is denied (docker's token realm must be the https URL).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import Dockyard
from tests.support.secured import GROUPS, PASSWORDS, RULES, write_htpasswd
from tests.support.tls_certs import TestCA

from .clients import Podman, Skopeo
from .daemons import Containerd, DockerDaemon
from .docker_helpers import inspect, load, push, remove
from .images import ImageFactory
from .tools import record_python_version, require, require_python_module

pytestmark = pytest.mark.e2e

DOCKER_CERTS_D = Path("/etc/docker/certs.d")
X509 = ("x509", "certificate", "unknown authority")


@pytest.fixture(scope="module")
def test_ca(e2e_root: Path) -> TestCA:
    return TestCA.create(e2e_root / "tls-ca")


@pytest.fixture(scope="module")
def https_dockyard(e2e_root: Path, test_ca: TestCA) -> Iterator[Dockyard]:
    if shutil.which("haproxy") is None and shutil.which("haproxy", path="/usr/sbin") is None:
        pytest.skip("haproxy is not installed")
    cert, key = test_ca.issue("registry")
    config = e2e_root / "tls-dockyard.yml"
    config.write_text(f"tls:\n  cert: {cert}\n  key: {key}\n")
    with Dockyard(e2e_root / "tls-dockyard", config=config, ca_certs=test_ca.ca_path) as server:
        yield server


@pytest.fixture(scope="module")
def https_secured(e2e_root: Path, test_ca: TestCA) -> Iterator[Dockyard]:
    """HTTPS and access control together (the users and rules of tests/support/secured.py)."""
    if shutil.which("haproxy") is None and shutil.which("haproxy", path="/usr/sbin") is None:
        pytest.skip("haproxy is not installed")
    directory = e2e_root / "tls-secured"
    directory.mkdir()
    write_htpasswd(directory / "htpasswd", PASSWORDS)
    cert, key = test_ca.issue("secured")
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump({
        "auth": {"htpasswd": str(directory / "htpasswd"), "groups": GROUPS,
                 "failed_login_limit": 1000},
        "access": RULES,
        "tls": {"cert": str(cert), "key": str(key)},
    }))
    with Dockyard(directory / "data", config=config, ca_certs=test_ca.ca_path) as server:
        yield server


@pytest.fixture
def cert_dir(tmp_path: Path, test_ca: TestCA) -> Path:
    """A directory with the CA as containers/image and docker expect it: ca.crt."""
    directory = tmp_path / "certs"
    directory.mkdir()
    shutil.copy(test_ca.ca_path, directory / "ca.crt")
    return directory


@contextlib.contextmanager
def docker_trusts(addr: str, ca: TestCA) -> Iterator[None]:
    """The CA in /etc/docker/certs.d/ADDR/ca.crt, where dockerd looks, while in use."""
    host_dir = DOCKER_CERTS_D / addr
    host_dir.mkdir(parents=True, exist_ok=False)
    try:
        shutil.copy(ca.ca_path, host_dir / "ca.crt")
        yield
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def docker_login(docker: DockerDaemon, addr: str, user: str,
                 password: str | None = None) -> None:
    login = subprocess.run(
        ["docker", "login", "--username", user, "--password-stdin", addr],
        input=PASSWORDS[user] if password is None else password, env=docker.env,
        capture_output=True, text=True, timeout=120)
    assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr


def refused(proc: subprocess.CompletedProcess[str]) -> bool:
    text = (proc.stdout + proc.stderr).lower()
    return proc.returncode != 0 and any(word in text for word in X509)


def test_docker_login_push_pull_with_the_ca_in_certs_d(
        https_dockyard: Dockyard, docker: DockerDaemon, images: ImageFactory,
        test_ca: TestCA) -> None:
    addr = f"0.0.0.0:{https_dockyard.port}"
    ref = f"{addr}/e2e/tls-docker:v1"
    image = images.image("tls-docker")
    load(docker, images.docker_archive(image, [ref]))

    # Not trusted yet: docker checks the certificate and will not fall back to HTTP.
    without = docker.docker("push", ref, check=False)
    assert refused(without), without.stderr

    with docker_trusts(addr, test_ca):
        docker_login(docker, addr, "ci", "not-checked-without-auth")
        pushed = push(docker, ref)
        assert len(pushed.layers) == len(image.layers), pushed.output
        remove(docker, ref)
        docker.docker("pull", ref)
        assert inspect(docker, ref)["RootFS"]["Layers"] == image.diff_ids
        remove(docker, ref)
    # What docker sent arrived through haproxy's TLS port: the router logged it.
    assert "PUT /v2/e2e/tls-docker/manifests/v1 201" in https_dockyard.log_text()


def test_docker_login_over_https_with_access_control(
        https_secured: Dockyard, docker: DockerDaemon, images: ImageFactory,
        test_ca: TestCA) -> None:
    addr = f"0.0.0.0:{https_secured.port}"
    ref = f"{addr}/team-a/tls-login:v1"
    image = images.image("tls-login")
    load(docker, images.docker_archive(image, [ref]))
    try:
        with docker_trusts(addr, test_ca):
            docker_login_push_and_denied(docker, addr, ref, image)
    finally:
        docker.docker("logout", addr, check=False)


def docker_login_push_and_denied(docker: DockerDaemon, addr: str, ref: str,
                                 image: Any) -> None:
    assert docker.docker("push", ref, check=False).returncode != 0  # no login yet
    docker_login(docker, addr, "alice")
    push(docker, ref)
    remove(docker, ref)
    docker.docker("pull", ref)
    assert inspect(docker, ref)["RootFS"]["Layers"] == image.diff_ids
    docker.docker("logout", addr)
    docker_login(docker, addr, "reader")
    other = f"{addr}/readers/tls-login:v1"
    docker.docker("tag", ref, other)
    denied = docker.docker("push", other, check=False)
    assert denied.returncode != 0
    assert "denied" in denied.stdout + denied.stderr, denied.stderr
    remove(docker, other, ref)


def test_podman_and_skopeo_with_a_cert_dir(
        https_dockyard: Dockyard, podman: Podman, skopeo: Skopeo, images: ImageFactory,
        cert_dir: Path) -> None:
    addr = https_dockyard.addr
    local = "localhost/e2e/tls-podman:local"
    image = images.image("tls-podman")
    podman("load", "--input", str(images.docker_archive(image, [local])))
    ref = f"{addr}/e2e/tls-podman:v1"

    without = podman("push", "--tls-verify=true", local, ref, check=False)
    assert refused(without), without.stderr
    podman("push", "--tls-verify=true", "--cert-dir", str(cert_dir), local, ref)

    out = skopeo("inspect", "--tls-verify=true", "--cert-dir", str(cert_dir),
                 f"docker://{ref}").stdout
    assert image.diff_ids[0].split(":")[1][:12] in out or '"Layers"' in out
    assert refused(skopeo("inspect", "--tls-verify=true", f"docker://{ref}", check=False))
    copy = f"{addr}/e2e/tls-skopeo:v1"
    skopeo("copy", "--src-tls-verify=true", "--src-cert-dir", str(cert_dir),
           "--dest-tls-verify=true", "--dest-cert-dir", str(cert_dir),
           f"docker://{ref}", f"docker://{copy}")
    tags = skopeo("list-tags", "--tls-verify=true", "--cert-dir", str(cert_dir),
                  f"docker://{addr}/e2e/tls-skopeo").stdout
    assert '"v1"' in tags


def test_ctr_with_tlscacert(https_dockyard: Dockyard, containerd: Containerd,
                            images: ImageFactory, test_ca: TestCA) -> None:
    ns = "e2e-tls"
    # ctr sends 127.0.0.1 and localhost plain HTTP by default; 0.0.0.0 gets HTTPS.
    ref = f"0.0.0.0:{https_dockyard.port}/e2e/tls-ctr:v1"
    image = images.image("tls-ctr")
    containerd.ctr("images", "import", "--no-unpack",
                   str(images.docker_archive(image, [ref])), namespace=ns)
    without = containerd.ctr("images", "push", ref, namespace=ns, check=False)
    assert refused(without), without.stderr
    containerd.ctr("images", "push", "--tlscacert", str(test_ca.ca_path), ref, namespace=ns)
    fresh = "e2e-tls-fetch"
    containerd.ctr("content", "fetch", "--tlscacert", str(test_ca.ca_path), ref,
                   namespace=fresh)
    fetched = set(containerd.ctr("content", "ls", "--quiet", namespace=fresh).stdout.split())
    assert {image.config_digest, *image.diff_ids} <= fetched, fetched


def test_oras_with_the_ca_bundle(https_dockyard: Dockyard, test_ca: TestCA,
                                 tmp_path: Path) -> None:
    require_python_module("oras", "oras")
    record_python_version("oras (Python SDK)", "oras")
    import oras.client
    import requests

    artifact = tmp_path / "notes.txt"
    artifact.write_bytes(b"over https\n")
    target = f"{https_dockyard.addr}/e2e/tls-oras:v1"
    untrusting = oras.client.OrasClient(hostname=https_dockyard.addr, tls_verify=True)
    with pytest.raises(requests.exceptions.SSLError):
        untrusting.push(target=target, files=[str(artifact)], disable_path_validation=True)
    client = oras.client.OrasClient(hostname=https_dockyard.addr,
                                    tls_verify=str(test_ca.ca_path))
    client.push(target=target, files=[str(artifact)], disable_path_validation=True)
    out = tmp_path / "pulled"
    paths = client.pull(target=target, outdir=str(out))
    assert [Path(p).read_bytes() for p in paths] == [b"over https\n"]


def test_clients_are_installed() -> None:
    # The scenario needs all of these; `require` reports what is missing.
    require("docker", "podman", "skopeo", "ctr")


def test_podman_login_and_skopeo_creds_over_https(
        https_secured: Dockyard, podman: Podman, skopeo: Skopeo, images: ImageFactory,
        cert_dir: Path) -> None:
    addr = https_secured.addr
    ref = f"{addr}/team-a/tls-podman-login:v1"
    podman("load", "--input",
           str(images.docker_archive(images.image("tls-podman-login"), [ref])))
    certs = ["--tls-verify=true", "--cert-dir", str(cert_dir)]
    login = subprocess.run([podman.binary, *podman.global_flags(), "login", *certs,
                            "--username", "ci-bot", "--password-stdin", addr],
                           input=PASSWORDS["ci-bot"], env=podman.config.env,
                           capture_output=True, text=True, timeout=120)
    assert login.returncode == 0, login.stdout + login.stderr
    try:
        podman("push", *certs, ref)
    finally:
        podman("logout", "--all", check=False)

    reader = f"reader:{PASSWORDS['reader']}"
    out = skopeo("inspect", *certs, "--creds", f"alice:{PASSWORDS['alice']}",
                 f"docker://{ref}").stdout
    assert "team-a/tls-podman-login" in out
    denied = skopeo("copy", "--src-tls-verify=true", "--src-cert-dir", str(cert_dir),
                    "--src-creds", f"alice:{PASSWORDS['alice']}",
                    "--dest-tls-verify=true", "--dest-cert-dir", str(cert_dir),
                    "--dest-creds", reader, f"docker://{ref}",
                    f"docker://{addr}/readers/tls-skopeo-login:v1", check=False)
    assert denied.returncode != 0 and "denied" in denied.stdout + denied.stderr, \
        denied.stderr


def test_ctr_user_over_https(https_secured: Dockyard, containerd: Containerd,
                             images: ImageFactory, test_ca: TestCA) -> None:
    ns = "e2e-tls-auth"
    addr = f"0.0.0.0:{https_secured.port}"  # HTTPS for ctr, as above
    ref = f"{addr}/team-a/tls-ctr-login:v1"
    containerd.ctr("images", "import", "--no-unpack",
                   str(images.docker_archive(images.image("tls-ctr-login"), [ref])),
                   namespace=ns)
    ca = ["--tlscacert", str(test_ca.ca_path)]
    containerd.ctr("images", "push", *ca, "--user", f"alice:{PASSWORDS['alice']}", ref,
                   namespace=ns)
    other = f"{addr}/readers/tls-ctr-login:v1"
    containerd.ctr("images", "tag", ref, other, namespace=ns)
    denied = containerd.ctr("images", "push", *ca, "--user", f"reader:{PASSWORDS['reader']}",
                            other, namespace=ns, check=False)
    out = denied.stdout + denied.stderr
    assert denied.returncode != 0 and ("denied" in out or "403" in out), out


def test_oras_basic_auth_over_https(https_secured: Dockyard, test_ca: TestCA,
                                    tmp_path: Path) -> None:
    require_python_module("oras", "oras")
    import oras.client

    addr = https_secured.addr
    note = tmp_path / "note.txt"
    note.write_text("signed in over https\n")
    client = oras.client.OrasClient(hostname=addr, auth_backend="basic",
                                    tls_verify=str(test_ca.ca_path))
    client.login(username="alice", password=PASSWORDS["alice"],
                 tls_verify=str(test_ca.ca_path))  # type: ignore[arg-type]
    client.push(target=f"{addr}/team-a/tls-oras-login:v1", files=[str(note)],
                disable_path_validation=True, quiet=True)
    paths = client.pull(target=f"{addr}/team-a/tls-oras-login:v1",
                        outdir=str(tmp_path / "pulled"))
    assert [Path(p).read_text() for p in paths] == ["signed in over https\n"]
    reader = oras.client.OrasClient(hostname=addr, auth_backend="basic",
                                    tls_verify=str(test_ca.ca_path))
    reader.login(username="reader", password=PASSWORDS["reader"],
                 tls_verify=str(test_ca.ca_path))  # type: ignore[arg-type]
    with pytest.raises(Exception) as refused:
        reader.push(target=f"{addr}/readers/tls-oras-login:v1", files=[str(note)],
                    disable_path_validation=True, quiet=True)
    assert "denied" in str(refused.value).lower() or "403" in str(refused.value)
