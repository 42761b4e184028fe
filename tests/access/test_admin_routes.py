"""The administration routes under access control: a repository DELETE needs the
delete permission on it; usage answers administrators only (a rule for every
repository, ``**``, that lets them delete)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.registry_client import error_code
from tests.support.secured import AuthClient

from .test_rules import unique


def test_repository_delete_needs_delete(as_user: Any, admin: AuthClient,
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


def test_usage_is_for_administrators(as_user: Any, admin: AuthClient,
                                     anon: AuthClient) -> None:
    assert anon.request("GET", "/api/v1/usage").status == 401
    for user in ("alice", "reader"):
        r = as_user(user).request("GET", "/api/v1/usage")
        assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED", user
    r = admin.request("GET", "/api/v1/usage")
    assert r.status == 200, r.data
    assert "registry" in json.loads(r.data)
