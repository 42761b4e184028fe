"""Logins with real clients against a dockyard with access control (plain HTTP on loopback).

Each client logs in the way its users do (docker login, podman login, skopeo
--creds, ctr --user, ORAS login), pushes and pulls where its user may; and a
user without push (`reader`) is refused, with the registry's message shown by
the client. Docker and containerd treat 127.0.0.0/8 as an insecure registry,
so no TLS is needed here.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Dockyard
from tests.support.secured import PASSWORDS, AuthClient, basic, start_secured

from .clients import Podman, Skopeo
from .daemons import Containerd, DockerDaemon
from .docker_helpers import inspect, load, push, remove
from .images import ImageFactory

pytestmark = pytest.mark.e2e

DENIED = "requested access to the resource is denied"


@pytest.fixture(scope="module")
def secured_registry(e2e_root: Path) -> Iterator[Dockyard]:
    server = start_secured(e2e_root / "secured")
    try:
        yield server
    finally:
        server.stop()


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout or "") + (result.stderr or "")


def test_docker_login_push_pull_and_denied(secured_registry: Dockyard, docker: DockerDaemon,
                                           images: ImageFactory) -> None:
    addr = secured_registry.addr
    ref = f"{addr}/team-a/docker-auth:v1"
    image = images.image("docker-auth")
    load(docker, images.docker_archive(image, [ref]))
    # Without a login: refused.
    out = _output(docker.docker("push", ref, check=False))
    assert "unauthorized" in out.lower() or "authentication required" in out, out
    login = subprocess.run(["docker", "login", "--username", "alice", "--password-stdin",
                            addr], input=PASSWORDS["alice"], env=docker.env,
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0 and "Login Succeeded" in login.stdout, _output(login)
    try:
        push(docker, ref)
        remove(docker, ref)
        docker.docker("pull", ref)
        assert inspect(docker, ref)["RootFS"]["Layers"] == image.diff_ids
        # reader may pull readers/** only: a push elsewhere is denied.
        docker.docker("logout", addr)
        subprocess.run(["docker", "login", "--username", "reader", "--password-stdin", addr],
                       input=PASSWORDS["reader"], env=docker.env, check=True,
                       capture_output=True, text=True, timeout=60)
        other = f"{addr}/readers/docker-auth:v1"
        docker.docker("tag", ref, other)
        result = docker.docker("push", other, check=False)
        assert result.returncode != 0
        assert "denied" in _output(result), _output(result)
        remove(docker, other, ref)
    finally:
        docker.docker("logout", addr, check=False)


def test_docker_search_shows_only_pullable(secured_registry: Dockyard,
                                           docker: DockerDaemon) -> None:
    admin = AuthClient(secured_registry.url, basic("admin"))
    for name in ("team-a/lookfor-mine", "secret/lookfor-hidden", "public/lookfor-open"):
        admin.push_image(name, "v1")
    addr = secured_registry.addr
    subprocess.run(["docker", "login", "--username", "alice", "--password-stdin", addr],
                   input=PASSWORDS["alice"], env=docker.env, check=True,
                   capture_output=True, text=True, timeout=60)
    try:
        found: list[str] = []
        for _ in range(20):  # the search snapshot may trail a push by a second
            found = docker.docker("search", "--format", "{{.Name}}",
                                  f"{addr}/lookfor").stdout.split()
            if len(found) >= 2:
                break
            time.sleep(0.5)
        names = {line.rsplit("/", 2)[-2] + "/" + line.rsplit("/", 1)[-1] for line in found}
        assert names == {"team-a/lookfor-mine", "public/lookfor-open"}, found
    finally:
        docker.docker("logout", addr, check=False)


def test_podman_login_push_and_denied(secured_registry: Dockyard, podman: Podman,
                                      images: ImageFactory) -> None:
    addr = secured_registry.addr
    ref = f"{addr}/team-a/podman-auth:v1"
    image = images.image("podman-auth")
    podman("load", "--input", str(images.docker_archive(image, [ref])))
    login = subprocess.run([podman.binary, *podman.global_flags(), "login",
                            "--tls-verify=false", "--username", "ci-bot", "--password-stdin",
                            addr], input=PASSWORDS["ci-bot"], env=podman.config.env,
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, _output(login)
    try:
        podman("push", "--tls-verify=false", ref)
        podman("rmi", ref)
        podman("pull", "--tls-verify=false", ref)
        podman("logout", addr)
        subprocess.run([podman.binary, *podman.global_flags(), "login", "--tls-verify=false",
                        "--username", "reader", "--password-stdin", addr],
                       input=PASSWORDS["reader"], env=podman.config.env, check=True,
                       capture_output=True, text=True, timeout=60)
        result = podman("push", "--tls-verify=false", ref,
                        f"docker://{addr}/readers/podman-auth:v1", check=False)
        assert result.returncode != 0
        assert "denied" in _output(result), _output(result)
    finally:
        podman("logout", "--all", check=False)
        podman("rmi", "--force", ref, check=False)


def test_skopeo_creds(secured_registry: Dockyard, skopeo: Skopeo,
                      images: ImageFactory) -> None:
    addr = secured_registry.addr
    layout = images.oci_layout("skopeo-auth")
    layout.tag(layout.add_image(images.image("skopeo-auth")), "v1")
    dest = f"docker://{addr}/team-a/skopeo-auth:v1"
    alice = f"alice:{PASSWORDS['alice']}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", alice, layout.ref("v1"), dest)
    out = skopeo("inspect", "--tls-verify=false", "--creds", alice, dest).stdout
    assert "team-a/skopeo-auth" in out
    # No credentials: refused; wrong ones: refused; a reader's push: denied.
    assert skopeo("inspect", "--tls-verify=false", dest, check=False).returncode != 0
    bad = skopeo("inspect", "--tls-verify=false", "--creds", "alice:wrong", dest, check=False)
    assert bad.returncode != 0 and "unauthorized" in _output(bad).lower(), _output(bad)
    result = skopeo("copy", "--dest-tls-verify=false", "--dest-creds",
                    f"reader:{PASSWORDS['reader']}", layout.ref("v1"),
                    f"docker://{addr}/readers/skopeo-auth:v1", check=False)
    assert result.returncode != 0 and "denied" in _output(result), _output(result)


def test_ctr_user(secured_registry: Dockyard, containerd: Containerd,
                  images: ImageFactory) -> None:
    addr = secured_registry.addr
    ns = "e2e-ctr-auth"
    ref = f"{addr}/team-a/ctr-auth:v1"
    containerd.ctr("images", "import", "--no-unpack",
                   str(images.docker_archive(images.image("ctr-auth"), [ref])), namespace=ns)
    alice = f"alice:{PASSWORDS['alice']}"
    containerd.ctr("images", "push", "--plain-http", "--user", alice, ref, namespace=ns)
    containerd.ctr("images", "rm", "--sync", ref, namespace=ns)
    containerd.ctr("images", "pull", "--plain-http", "--user", alice, "--snapshotter",
                   "native", ref, namespace=ns)
    denied = f"{addr}/readers/ctr-auth:v1"
    containerd.ctr("images", "tag", ref, denied, namespace=ns)
    result = containerd.ctr("images", "push", "--plain-http", "--user",
                            f"reader:{PASSWORDS['reader']}", denied, namespace=ns,
                            check=False)
    assert result.returncode != 0
    out = _output(result)
    assert "denied" in out or "403" in out or "unauthorized" in out.lower(), out
    containerd.ctr("images", "rm", "--sync", ref, denied, namespace=ns, check=False)


def test_oras_basic_auth(secured_registry: Dockyard, e2e_root: Path) -> None:
    import oras.client

    addr = secured_registry.addr
    work = e2e_root / "oras-auth"
    work.mkdir(parents=True, exist_ok=True)
    (work / "note.txt").write_text("signed in\n")
    # Basic credentials on every request. (oras-py's token backend asks for a new
    # token only after a 403, not after the spec's 401 insufficient_scope.)
    client = oras.client.OrasClient(hostname=addr, insecure=True, auth_backend="basic")
    client.login(username="alice", password=PASSWORDS["alice"], tls_verify=False)
    client.push(target=f"{addr}/team-a/oras-auth:v1", files=[str(work / "note.txt")],
                disable_path_validation=True, quiet=True)
    out = work / "pulled"
    paths = client.pull(target=f"{addr}/team-a/oras-auth:v1", outdir=str(out))
    assert [Path(p).read_text() for p in paths] == ["signed in\n"]
    reader = oras.client.OrasClient(hostname=addr, insecure=True, auth_backend="basic")
    reader.login(username="reader", password=PASSWORDS["reader"], tls_verify=False)
    with pytest.raises(Exception) as refused:
        reader.push(target=f"{addr}/readers/oras-auth:v1", files=[str(work / "note.txt")],
                    disable_path_validation=True, quiet=True)
    assert "denied" in str(refused.value).lower() or "403" in str(refused.value), refused.value
