"""Who reads registry-wide usage with a token (`shared.auth.admin`).

The rule, unit by unit against the policy, then through :5000 of a real
`dockyard serve` that trusts an external issuer too: an administrator's token
of our own issuer with ``registry:usage:*`` reads usage; without the scope it
is asked to get one (401 insufficient_scope); an external issuer's token, a
non-administrator's token (even one forged with the scope on our own key) and
anonymous callers are refused as before, and the token endpoint grants the
scope to administrators only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import admin
from shared.auth.credentials import VerifiedCache
from shared.auth.identity import ANONYMOUS, PASSWORD, TOKEN, Identity
from shared.auth.policy import Policy, Rule, parse_groups
from shared.auth.tokens import (
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    TrustedIssuer,
    generate_key,
    parse_scopes,
    unverified_claims,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import error_code
from tests.support.secured import GROUPS, RULES, AuthClient, basic, start_secured

from .test_tokens import _certificate, bearer, forge, server_key

USAGE = "/api/v1/usage"
Verdict = admin.Verdict


def policy(rules: list[dict[str, Any]] = RULES) -> Policy:
    return Policy([Rule.parse(r, f"access[{i}]") for i, r in enumerate(rules)],
                  parse_groups(GROUPS))


def token_identity(user: str, *, usage: bool = True, own: bool = True) -> Identity:
    return Identity(user, TOKEN, {}, catalog=True, use_policy=own, usage=usage)


# -- the rule ------------------------------------------------------------------

def test_an_administrator_is_who_may_delete_everywhere() -> None:
    p = policy()
    assert admin.is_administrator(p, "admin")
    for user in ("alice", "carol", "reader", "nobody", ""):
        assert not admin.is_administrator(p, user), user
    # By group, or as any signed-in caller; never by an anonymous right, nor by
    # delete on less than every repository.
    assert admin.is_administrator(policy([{"repositories": ["**"], "groups": ["team-a"],
                                           "actions": ["*"]}]), "carol")
    assert admin.is_administrator(policy([{"repositories": ["**"],
                                           "authenticated": ["delete"]}]), "anyone")
    for rules in ([{"repositories": ["**"], "anonymous": ["*"]}],
                  [{"repositories": ["team-a/**"], "users": ["alice"], "actions": ["*"]}],
                  [{"repositories": ["**"], "users": ["alice"], "actions": ["pull", "push"]}]):
        assert not admin.is_administrator(policy(rules), "alice"), rules


def test_which_callers_act_as_administrators() -> None:
    p = policy()
    cases = {
        "admin by password": (Identity("admin", PASSWORD), Verdict.ALLOWED),
        "admin, own token with the scope": (token_identity("admin"), Verdict.ALLOWED),
        "admin, own token without it": (token_identity("admin", usage=False),
                                        Verdict.INSUFFICIENT_SCOPE),
        "admin, external token with it": (token_identity("admin", own=False), Verdict.DENIED),
        "non-admin, own token with it": (token_identity("alice"), Verdict.DENIED),
        "non-admin, own token without it": (token_identity("alice", usage=False),
                                            Verdict.DENIED),
        "non-admin by password": (Identity("alice", PASSWORD), Verdict.DENIED),
        "anonymous": (ANONYMOUS, Verdict.DENIED),
    }
    for label, (identity, verdict) in cases.items():
        assert admin.decide(p, identity) is verdict, label


def test_the_usage_claim_is_read_from_the_token(tmp_path: Path) -> None:
    generate_key(tmp_path / "key.pem")
    key = SigningKey.load(tmp_path / "key.pem")
    issuer = TokenIssuer(key, "dockyard", "dockyard", 300, 3600)
    verifier = TokenVerifier([TrustedIssuer("dockyard", "dockyard", (key.public,), True)],
                             VerifiedCache(60.0, 100))
    with_usage, _ = issuer.access_token("admin", parse_scopes(["registry:usage:*"]))
    without, _ = issuer.access_token("admin", parse_scopes(["registry:catalog:*"]))
    assert verifier.identity(with_usage).usage and not verifier.identity(with_usage).catalog
    assert not verifier.identity(without).usage and verifier.identity(without).catalog


# -- through :5000 -------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dockyard, Any]]:
    directory = tmp_path_factory.mktemp("admin-tokens")
    corp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _certificate(corp, directory / "corp.crt")
    server = start_secured(directory, auth={"external": [
        {"issuer": "corp-sso", "audience": "registry.example",
         "keys": str(directory / "corp.crt")}]})
    try:
        yield server, corp
    finally:
        server.stop()


def usage_with(server: Dockyard, token: str) -> Any:
    return bearer(server, token).request("GET", USAGE)


def assert_denied(r: Any) -> None:
    """The refusal a non-administrator always got: 403 DENIED, no figure."""
    assert r.status == 403, (r.status, r.data)
    body = json.loads(r.data)
    assert error_code(body) == "DENIED" and "registry" not in body


def test_an_administrators_own_token_with_the_scope_reads_usage(
        served: tuple[Dockyard, Any]) -> None:
    server, _ = served
    client = AuthClient(server.url)
    token = client.token(["registry:catalog:*", admin.USAGE_SCOPE], user="admin")
    access = {(a["type"], a["name"]): a["actions"] for a in unverified_claims(token)["access"]}
    assert access[("registry", "usage")] == ["*"]
    r = usage_with(server, token)
    assert r.status == 200, r.data
    assert "registry" in json.loads(r.data)
    # The OAuth2 flow (POST, as `docker login` and the UI's refresh use) grants it alike.
    r = client.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "password", "username": "admin", "password": "admin-pw",
        "service": "dockyard", "client_id": "test", "scope": admin.USAGE_SCOPE})
    assert r.status == 200
    assert usage_with(server, json.loads(r.data)["access_token"]).status == 200


def test_an_administrators_token_without_the_scope_is_asked_for_it(
        served: tuple[Dockyard, Any]) -> None:
    server, _ = served
    token = AuthClient(server.url).token(["registry:catalog:*"], user="admin")
    r = usage_with(server, token)
    assert r.status == 401
    challenge = r.headers["WWW-Authenticate"]
    assert f'scope="{admin.USAGE_SCOPE}"' in challenge
    assert 'error="insufficient_scope"' in challenge
    assert "registry" not in json.loads(r.data)


def test_the_token_endpoint_grants_the_scope_to_administrators_only(
        served: tuple[Dockyard, Any]) -> None:
    server, _ = served
    client = AuthClient(server.url)
    for user in ("alice", "carol", "reader", None):
        token = client.token(["registry:catalog:*", admin.USAGE_SCOPE], user=user)
        granted = {(a["type"], a["name"]) for a in unverified_claims(token)["access"]}
        assert ("registry", "usage") not in granted, user
        r = usage_with(server, token)
        if user is None:
            assert r.status == 401, r.data  # a token for nobody: as anonymous
        else:
            # The same refusal as by password: nothing says the scope exists for others.
            assert_denied(r)
            assert_denied(AuthClient(server.url, basic(user)).request("GET", USAGE))


def test_a_token_with_the_scope_for_a_non_administrator_is_refused(
        served: tuple[Dockyard, Any]) -> None:
    """Signed with our own key, so only the policy, checked at each request, refuses it
    (as it would for an administrator removed from the rules after the token was issued)."""
    server, _ = served
    usage = [{"type": "registry", "name": "usage", "actions": ["*"]}]
    assert_denied(usage_with(server, forge(server_key(server), sub="alice", access=usage)))
    assert usage_with(server, forge(server_key(server), sub="admin", access=usage)).status \
        == 200


def test_an_external_issuers_token_never_administers(served: tuple[Dockyard, Any]) -> None:
    server, corp = served
    token = forge(corp, "RS256", iss="corp-sso", aud="registry.example", sub="admin",
                  access=[{"type": "registry", "name": "usage", "actions": ["*"]},
                          {"type": "registry", "name": "catalog", "actions": ["*"]}])
    assert_denied(usage_with(server, token))


def test_anonymous_is_challenged_for_the_scope(served: tuple[Dockyard, Any]) -> None:
    server, _ = served
    r = AuthClient(server.url).request("GET", USAGE)
    assert r.status == 401
    assert f'scope="{admin.USAGE_SCOPE}"' in r.headers["WWW-Authenticate"]
    assert "registry" not in json.loads(r.data)
