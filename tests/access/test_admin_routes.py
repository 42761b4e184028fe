"""The administration routes under access control: a repository DELETE needs the
delete permission on it; usage answers administrators only (a rule for every
repository, ``**``, that lets them delete)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import error_code
from tests.support.secured import PASSWORDS, AuthClient

from .test_rules import unique


def test_repository_delete_needs_delete(secured: Dockyard, as_user: Any, admin: AuthClient,
                                        anon: AuthClient) -> None:
    alice = as_user("alice")
    name = unique("team-a")
    alice.push_image(name, "v1")
    r = alice.request("DELETE", f"/api/v1/repositories/{name}")
    assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED"
    assert anon.request("DELETE", f"/api/v1/repositories/{name}").status == 401
    assert alice.get_manifest(name, "v1").status == 200
    r = admin.request("DELETE", f"/api/v1/repositories/{name}")
    assert r.status == 202, r.data
    assert json.loads(r.data)["manifests_deleted"] == 1
    assert alice.get_manifest(name, "v1").status == 404
    # The most destructive write of all leaves its audit line too.
    line = f"audit identity=admin action=delete-repository repository={name} "
    deadline = time.monotonic() + 5
    while line not in secured.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line in secured.log_text()


def test_usage_is_for_administrators(as_user: Any, admin: AuthClient,
                                     anon: AuthClient) -> None:
    assert anon.request("GET", "/api/v1/usage").status == 401
    for user in ("alice", "reader"):
        r = as_user(user).request("GET", "/api/v1/usage")
        assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED", user
    r = admin.request("GET", "/api/v1/usage")
    assert r.status == 200, r.data
    assert "registry" in json.loads(r.data)


def test_repo_delete_command_logs_in(secured: Dockyard, as_user: Any,
                                     admin: AuthClient) -> None:
    """`dockyard repo delete` under access control: refused without --user (with a
    hint), done with an administrator's credentials from DOCKYARD_PASSWORD."""
    name = unique("team-a")
    as_user("alice").push_image(name, "v1")
    argv = [str(VENV_BIN / "dockyard"), "repo", "delete", name, "--url", secured.url, "--yes"]
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_PASSWORD"}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0 and "401" in out.stderr and "--user" in out.stderr, out.stderr
    out = subprocess.run([*argv, "--user", "alice"], capture_output=True, text=True,
                         timeout=60, env={**env, "DOCKYARD_PASSWORD": PASSWORDS["alice"]})
    assert out.returncode != 0 and "403" in out.stderr, out.stderr
    assert admin.get_manifest(name, "v1").status == 200
    out = subprocess.run([*argv, "--user", "admin"], capture_output=True, text=True,
                         timeout=60, env={**env, "DOCKYARD_PASSWORD": PASSWORDS["admin"]})
    assert out.returncode == 0, out.stderr
    assert "deleted 1 manifests" in out.stdout
    assert admin.get_manifest(name, "v1").status == 404
