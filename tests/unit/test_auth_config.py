"""The `auth` and `access` configuration: shapes refused with the key named, globs, policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import config
from shared.auth.htpasswd import Htpasswd, set_password
from shared.auth.policy import Policy


def load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config.load(path, environ={})


@pytest.mark.parametrize("text, where", [
    ("access: [{users: [a], actions: [pull]}]", "access[0].repositories"),
    ("access: [{repositories: [x], actions: [fly]}]", "access[0].actions"),
    ("access: [{repositories: [x], users: [a]}]", "access[0].actions"),
    ("access: [{repositories: [x], anonymous: [pull], colour: red}]", "access[0].colour"),
    ("access: [x]", "access"),
    ("auth: {groups: {g: a}}", "auth.groups.g"),
    ("auth: {external: [{issuer: corp}]}", "auth.external[0].keys"),
    ("auth: {mode: digest}", "auth.mode"),
])
def test_malformed_rules_name_their_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(config.ConfigError, match=rf"^{__import__('re').escape(where)}"):
        load(tmp_path, text)


def test_defaults_leave_access_control_off(tmp_path: Path) -> None:
    from shared.auth import settings

    assert not settings.enabled(load(tmp_path, ""))
    assert settings.enabled(load(tmp_path, "access: [{repositories: ['**'], "
                                           "anonymous: [pull]}]"))
    keys = {path for path, *_ in config.reference()}
    assert {"auth.htpasswd", "auth.token.key", "auth.external", "access"} <= keys


def test_rules_add_up_and_groups_count() -> None:
    cfg = {"auth": {"groups": {"devs": ["bob"]}}, "access": [
        {"repositories": ["pub/**"], "anonymous": ["pull"]},
        {"repositories": ["app/**"], "authenticated": ["pull"]},
        {"repositories": ["app/**"], "groups": ["devs"], "actions": ["push"]},
        {"repositories": ["**"], "users": ["root"], "actions": ["*"]},
    ]}
    policy = Policy.from_config(cfg)
    assert policy.actions("", "pub/x") == {"pull"}
    assert policy.actions("", "app/x") == set()
    assert policy.actions("eve", "app/x") == {"pull"}
    assert policy.actions("eve", "pub/x") == {"pull"}
    assert policy.actions("bob", "app/x") == {"pull", "push"}
    assert policy.actions("root", "zzz") == {"pull", "push", "delete"}


def test_htpasswd_reads_bcrypt_only_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    set_password(path, "alice", "pw", rounds=4)
    with path.open("a") as fh:
        fh.write("md5user:$apr1$abc$defghijklmnopqrstuvwx\n")
    users = Htpasswd(str(path))
    assert users.verify("alice", "pw")
    assert not users.verify("alice", "nope")
    assert not users.verify("md5user", "anything")
    assert not users.verify("nobody", "pw")
    generation = users.generation
    set_password(path, "alice", "new", rounds=4)
    users._checked = 0.0  # skip the once-a-second throttle
    assert users.verify("alice", "new") and users.generation > generation
    assert (path.stat().st_mode & 0o777) == 0o600


def test_external_keys_from_a_jwks_file_and_a_pem_bundle(tmp_path: Path) -> None:
    import json

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from shared.auth.credentials import VerifiedCache
    from shared.auth.tokens import (
        InvalidToken,
        TokenVerifier,
        TrustedIssuer,
        load_public_keys,
    )

    first, second = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    jwks = {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key()))
                     for k in (first, second)]}
    (tmp_path / "keys.json").write_text(json.dumps(jwks))
    (tmp_path / "keys.pem").write_bytes(b"".join(
        k.public_key().public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in (first, second)))
    for source in ("keys.json", "keys.pem"):
        keys = load_public_keys(tmp_path / source)
        assert len(keys) == 2
        verifier = TokenVerifier([TrustedIssuer("corp", "reg", tuple(keys), False)],
                                 VerifiedCache(60, 10))
        token = jwt.encode({"iss": "corp", "aud": "reg", "sub": "bot", "exp": 2**40,
                            "access": [{"type": "repository", "name": "a/b",
                                        "actions": ["pull"]}]}, second, algorithm="ES256")
        identity = verifier.identity(token)
        assert identity.name == "bot" and identity.access == {"a/b": {"pull"}}
        assert not identity.use_policy
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(InvalidToken):
            verifier.identity(jwt.encode({"iss": "corp", "aud": "reg", "exp": 2**40},
                                         other, algorithm="ES256"))
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(ValueError):
        load_public_keys(tmp_path / "empty.pem")


def test_failed_logins_fall_back_to_memory_when_redis_does_not_answer() -> None:
    from shared import redis_client
    from shared.auth.ratelimit import FailedLogins
    from tests.support.processes import free_port

    # Made as the router makes it (no retries: a login never waits on Redis).
    down = redis_client.connect(redis_client.from_url(f"redis://127.0.0.1:{free_port()}"),
                                retry=None, socket_connect_timeout=0.2, socket_timeout=0.2)
    for limiter in (FailedLogins(2, 30), FailedLogins(2, 30, redis=down)):
        assert limiter.retry_after("alice", "10.0.0.1") == 0
        limiter.failed("alice", "10.0.0.1")
        assert limiter.retry_after("alice", "10.0.0.2") == 0
        limiter.failed("alice", "10.0.0.2")
        assert 1 <= limiter.retry_after("alice", "10.0.0.3") <= 30
        assert limiter.retry_after("bob", "10.0.0.3") == 0
        limiter.failed("carol", "10.0.0.2")
        assert limiter.retry_after("bob", "10.0.0.2") > 0
