"""Docker token authentication through :5000: the token endpoint, and which tokens are refused."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shared.auth.htpasswd import set_password
from shared.auth.tokens import unverified_claims
from tests.support.registry_client import RegistryClient
from tests.support.secured import AuthClient, basic, start_secured


def unique(prefix: str) -> str:
    return f"{prefix}/t{uuid.uuid4().hex[:10]}"


def bearer(server: Any, token: str) -> AuthClient:
    return AuthClient(server.url, f"Bearer {token}")


def server_key(server: Any) -> Any:
    pem = (server.data_dir / "auth" / "token-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def forge(key: Any, alg: str = "ES256", headers: dict | None = None, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": "dockyard", "aud": "dockyard", "sub": "admin", "iat": now,
              "nbf": now - 1, "exp": now + 300,
              "access": [{"type": "repository", "name": "team-a/x", "actions": ["pull"]}]}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def test_token_grants_the_intersection(secured: Any, anon: AuthClient) -> None:
    name = unique("team-a")
    r = anon.request("GET", "/auth/token", fields=[
        ("service", "dockyard"), ("scope", f"repository:{name}:pull,push,delete"),
        ("scope", "repository:secret/x:pull"), ("scope", "registry:catalog:*")],
        headers={"Authorization": basic("alice")})
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    body = json.loads(r.data)
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    claims = unverified_claims(body["token"])
    assert claims["sub"] == "alice" and claims["aud"] == "dockyard"
    assert jwt.get_unverified_header(body["token"])["alg"] == "ES256"
    access = {(a["type"], a["name"]): a["actions"] for a in claims["access"]}
    assert access[("repository", name)] == ["pull", "push"]
    assert access[("repository", "secret/x")] == []
    assert access[("registry", "catalog")] == ["*"]


def test_token_push_pull_and_scope_of_one_repository(secured: Any, admin: AuthClient,
                                                     as_user: Any) -> None:
    a, b = unique("team-a"), unique("team-a")
    admin.push_image(b, "v1")
    alice = as_user("alice")
    token = alice.token([f"repository:{a}:pull,push"], user="alice")
    client = bearer(secured, token)
    client.push_image(a, "v1")
    assert client.get_manifest(a, "v1").status == 200
    # A token for A grants nothing on B, even where its holder may pull B:
    # 401 asking for a token with that scope.
    r = client.get_manifest(b, "v1")
    assert r.status == 401
    assert f'scope="repository:{b}:pull"' in r.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    # On a repository its holder may not pull: 403.
    secret = unique("secret")
    assert client.get_manifest(secret, "v1").status == 403
    # A token with pull only cannot push.
    pull_only = bearer(secured, alice.token([f"repository:{a}:pull"], user="alice"))
    assert pull_only.request("POST", f"/v2/{a}/blobs/uploads/").status == 401


def test_anonymous_token_pulls_public(secured: Any, admin: AuthClient,
                                      anon: AuthClient) -> None:
    public = unique("public")
    admin.push_image(public, "v1")
    token = anon.token([f"repository:{public}:pull,push"])
    assert unverified_claims(token)["access"][0]["actions"] == ["pull"]
    client = bearer(secured, token)
    assert client.get_manifest(public, "v1").status == 200
    assert client.request("POST", f"/v2/{public}/blobs/uploads/").status == 401


def test_oauth_password_and_refresh_grants(secured: Any, anon: AuthClient) -> None:
    name = unique("team-a")
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "password", "username": "alice", "password": "alice-pw",
        "service": "dockyard", "client_id": "test", "access_type": "offline",
        "scope": f"repository:{name}:pull,push"})
    assert r.status == 200, r.data
    body = json.loads(r.data)
    assert body["scope"] == f"repository:{name}:pull,push"
    refresh = body["refresh_token"]
    bearer(secured, body["access_token"]).push_image(name, "v1")
    # A refresh token is not an access token, and the other way round.
    assert bearer(secured, refresh).get_manifest(name, "v1").status == 401
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "refresh_token", "refresh_token": body["access_token"],
        "service": "dockyard", "scope": f"repository:{name}:pull"})
    assert r.status == 401
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "refresh_token", "refresh_token": refresh, "service": "dockyard",
        "client_id": "test", "scope": f"repository:{name}:pull"})
    assert r.status == 200
    assert bearer(secured, json.loads(r.data)["access_token"]).get_manifest(
        name, "v1").status == 200
    # A new password ends the refresh tokens issued under the old one.
    htpasswd = secured.config.parent / "htpasswd"
    set_password(htpasswd, "refresher", "one", rounds=4)
    time.sleep(1.1)
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "password", "username": "refresher", "password": "one",
        "service": "dockyard", "client_id": "test", "access_type": "offline"})
    assert r.status == 200, r.data
    old_refresh = json.loads(r.data)["refresh_token"]
    set_password(htpasswd, "refresher", "two", rounds=4)
    deadline = time.monotonic() + 5
    while True:
        r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
            "grant_type": "refresh_token", "refresh_token": old_refresh,
            "service": "dockyard", "client_id": "test"})
        if r.status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status == 401
    # The answer's scope is what was granted, not what was asked (RFC 6749 5.1).
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "password", "username": "alice", "password": "alice-pw",
        "service": "dockyard", "client_id": "test",
        "scope": f"repository:{name}:pull,push,delete repository:secret/x:pull "
                 "registry:catalog:*"})
    assert r.status == 200, r.data
    assert json.loads(r.data)["scope"] == (f"repository:{name}:pull,push "
                                           "registry:catalog:*")
    r = anon.request("POST", "/auth/token", encode_multipart=False, fields={
        "grant_type": "password", "username": "alice", "password": "nope",
        "service": "dockyard", "client_id": "test"})
    assert r.status == 401
    r = anon.request("POST", "/auth/token", encode_multipart=False,
                     fields={"grant_type": "magic"})
    assert r.status == 400


def test_refused_tokens(secured: Any, admin: AuthClient) -> None:
    name = "team-a/" + uuid.uuid4().hex[:10]
    admin.push_image(name, "v1")
    key = server_key(secured)
    access = [{"type": "repository", "name": name, "actions": ["pull"]}]
    good = forge(key, access=access)
    assert bearer(secured, good).get_manifest(name, "v1").status == 200
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["access"][0]["actions"] = ["pull", "push", "delete"]
    tampered_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    other = ec.generate_private_key(ec.SECP256R1())
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    refused = {
        "expired": forge(key, access=access, exp=now - 60, iat=now - 400, nbf=now - 400),
        "not yet valid": forge(key, access=access, nbf=now + 600),
        "no expiry": forge(key, access=access, exp=None),
        "other audience": forge(key, access=access, aud="someone-else"),
        "other issuer": forge(key, access=access, iss="evil"),
        "other key": forge(other, access=access),
        "alg none": f"{none_header.decode()}.{payload}.",
        "HS256 with the public key": _hs256(unverified_claims(good), public_pem),
        "tampered claims": f"{head}.{tampered_payload.decode()}.{sig}",
        "signature cut": f"{head}.{payload}.",
        "garbage": "not.a.jwt",
    }
    for label, token in refused.items():
        r = bearer(secured, token).get_manifest(name, "v1")
        assert r.status == 401, label
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], label
    r = bearer(secured, refused["tampered claims"]).request(
        "DELETE", f"/v2/{name}/manifests/v1")
    assert r.status == 401


def _hs256(claims: dict, secret: bytes) -> str:
    """HS256 signed with the public key as the HMAC secret: the classic key-confusion attack."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signing_input = header + b"." + body
    sig = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256)
                                   .digest()).rstrip(b"=")
    return (signing_input + b"." + sig).decode()


def _certificate(key: Any, path: Path) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp token signer")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(__import__("datetime").datetime(2020, 1, 1))
            .not_valid_after(__import__("datetime").datetime(2100, 1, 1))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def with_external(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("external")
    corp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _certificate(corp, directory / "corp.crt")
    server = start_secured(directory, auth={"external": [
        {"issuer": "corp-sso", "audience": "registry.example", "keys":
         str(directory / "corp.crt")}]})
    try:
        yield server, corp
    finally:
        server.stop()


def test_external_issuer(with_external: Any) -> None:
    server, corp = with_external
    admin = AuthClient(server.url, basic("admin"))
    name = unique("anything")
    admin.push_image(name, "v1")

    def corp_token(**overrides: Any) -> str:
        claims = {"iss": "corp-sso", "aud": "registry.example", "sub": "robot-7",
                  "access": [{"type": "repository", "name": name, "actions": ["pull"]}]}
        return forge(corp, "RS256", **{**claims, **overrides})

    client = bearer(server, corp_token())
    assert client.get_manifest(name, "v1").status == 200
    # The external issuer's claims are the whole grant: pull only, this repository only.
    assert client.request("POST", f"/v2/{name}/blobs/uploads/").status == 403
    assert client.get_manifest(unique("anything"), "v1").status == 403
    for bad in (corp_token(aud="dockyard"), corp_token(exp=int(time.time()) - 60),
                forge(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      "RS256", iss="corp-sso", aud="registry.example")):
        assert bearer(server, bad).get_manifest(name, "v1").status == 401
    # Our own tokens keep working beside the external ones.
    token = AuthClient(server.url).token([f"repository:{name}:pull"], user="admin")
    assert bearer(server, token).get_manifest(name, "v1").status == 200


def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    server = start_secured(tmp_path, auth={"failed_login_limit": 3,
                                           "failed_login_window": 30})
    try:
        one = AuthClient(server.url, basic("alice", "wrong"), source="127.0.0.2")
        for _ in range(3):
            assert one.request("GET", "/v2/").status == 401
        # The user is now limited, from any address, even with the right password.
        right = AuthClient(server.url, basic("alice"), source="127.0.0.3")
        r = right.request("GET", "/v2/")
        assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 30
        r = AuthClient(server.url, source="127.0.0.3").request(
            "GET", "/auth/token", headers={"Authorization": basic("alice")})
        assert r.status == 429
        # Another user from another address is not.
        assert AuthClient(server.url, basic("reader"), source="127.0.0.3").request(
            "GET", "/v2/").status == 200
        # One address guessing many users is limited too.
        for user in ("u1", "u2", "u3"):
            assert AuthClient(server.url, basic(user, "x"), source="127.0.0.4").request(
                "GET", "/v2/").status == 401
        r = AuthClient(server.url, basic("carol"), source="127.0.0.4").request("GET", "/v2/")
        assert r.status == 429 and "Retry-After" in r.headers
        assert AuthClient(server.url, basic("carol"), source="127.0.0.5").request(
            "GET", "/v2/").status == 200
        # X-Forwarded-For from a client is not believed (only router.trusted_proxy's is).
        spoof = AuthClient(server.url, basic("admin"), source="127.0.0.4")
        assert spoof.request("GET", "/v2/", headers={"X-Forwarded-For": "10.0.0.11"}
                             ).status == 429
    finally:
        server.stop()


def test_basic_mode_challenge(tmp_path: Path) -> None:
    server = start_secured(tmp_path, auth={"mode": "basic", "realm": "corp registry"})
    try:
        r = RegistryClient(server.url).request("GET", "/v2/")
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Basic realm="corp registry"'
        assert AuthClient(server.url, basic("alice")).request("GET", "/v2/").status == 200
    finally:
        server.stop()
