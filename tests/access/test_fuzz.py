"""Malformed Authorization headers and token requests: 400, 401 or 429, never a 500.

hypothesis draws bad base64, odd schemes, huge values, control-free garbage,
and JWTs signed with the registry's own key whose every claim may be wrong in
type or value; the router must answer with a client error and keep serving.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.secured import AuthClient

PATHS = ["/v2/", "/v2/team-a/fuzz/manifests/v1", "/v2/_catalog", "/v1/search?q=a",
         "/v2/team-a/fuzz/blobs/uploads/", "/auth/token?scope=repository:team-a/fuzz:pull"]
# Printable latin-1, as an HTTP header value may carry.
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
               max_size=300)
junk_value = st.one_of(
    text,
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()[:-1]),
    st.integers(1, 60_000).map(lambda n: "A" * n),
    text.map(lambda t: base64.b64encode(t.encode("latin-1")).decode()),
    st.just("Og=="), st.just("=="), st.just(""),
)
scheme = st.sampled_from(["Basic", "Bearer", "basic", "BEARER", "Digest", "Token", "", "Basic  "])
claim_value = st.one_of(st.none(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                        text, st.lists(text, max_size=3),
                        st.dictionaries(text, text, max_size=2), st.booleans())
access_value = st.one_of(claim_value, st.lists(st.one_of(claim_value, st.fixed_dictionaries({
    "type": claim_value, "name": claim_value, "actions": claim_value})), max_size=3))


def _key(secured: Any) -> Any:
    pem = (secured.data_dir / "auth" / "token-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(header: dict[str, Any], claims: dict[str, Any], key: Any) -> str:
    """A JWS by hand, so that any header or claim, however wrong, can be signed."""
    signing_input = (_b64(json.dumps(header).encode()) + "."
                     + _b64(json.dumps(claims).encode())).encode()
    signature = jwt.algorithms.get_default_algorithms()["ES256"].sign(signing_input, key)
    return signing_input.decode() + "." + _b64(signature)


def _ok(status: int, data: bytes) -> None:
    assert status in (400, 401, 403, 404, 429, 431), (status, data[:300])
    assert b"Traceback" not in data


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(scheme=scheme, value=junk_value, path=st.sampled_from(PATHS))
def test_malformed_authorization(secured: Any, scheme: str, value: str, path: str) -> None:
    client = AuthClient(secured.url, f"{scheme} {value}".strip() or "x")
    r = client.request("GET", path)
    if r.status == 200:
        # Only an anonymous-looking request to a token endpoint may succeed.
        assert path.startswith("/auth/token") and not value.strip(), (scheme, value[:50])
        return
    _ok(r.status, r.data)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(claims=st.fixed_dictionaries({}, optional={
    "iss": claim_value, "aud": claim_value, "sub": claim_value, "exp": claim_value,
    "nbf": claim_value, "iat": claim_value, "access": access_value, "jti": claim_value,
    "dockyard_refresh": claim_value}), header=st.dictionaries(
    st.sampled_from(["kid", "typ", "x5c", "jku", "crit"]), claim_value, max_size=2),
    path=st.sampled_from(PATHS))
def test_jwts_with_wrong_claims(secured: Any, claims: dict[str, Any],
                                header: dict[str, Any], path: str) -> None:
    token = _sign({"alg": "ES256", "typ": "JWT", **header}, claims, _key(secured))
    r = AuthClient(secured.url, f"Bearer {token}").request("GET", path)
    exp = claims.get("exp")
    valid = (claims.get("iss") == "dockyard" and claims.get("aud") == "dockyard"
             and isinstance(exp, int | float) and not isinstance(exp, bool)
             and exp > time.time())
    if r.status == 200:
        assert valid or path.startswith("/auth/token"), claims
        return
    _ok(r.status, r.data)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(form=st.dictionaries(st.sampled_from(["grant_type", "username", "password",
                                             "refresh_token", "scope", "access_type",
                                             "service", "client_id"]), text, max_size=6),
       raw=st.one_of(st.none(), st.binary(max_size=300)))
def test_token_endpoint_forms(secured: Any, form: dict[str, str], raw: bytes | None) -> None:
    client = AuthClient(secured.url)
    if raw is None:
        r = client.request("POST", "/auth/token", fields=form, encode_multipart=False)
    else:
        r = client.request("POST", "/auth/token", body=raw,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    if r.status == 200:
        assert "access_token" in json.loads(r.data)
        return
    _ok(r.status, r.data)


def test_no_unhandled_error_was_logged(secured: Any) -> None:
    """Runs after the fuzzers above: nothing they sent reached an unhandled exception."""
    assert "Traceback" not in secured.log_text()
