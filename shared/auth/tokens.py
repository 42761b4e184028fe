"""Docker token authentication: the tokens dockyard issues, and those it accepts.

Issued tokens are JWTs signed with an asymmetric key (EC P-256 -> ES256, RSA
-> RS256) with the claims the Docker token spec names: ``iss``, ``sub``,
``aud`` (the service), ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``, a
list of ``{"type", "name", "actions"}``. A refresh token is a JWT of the same
key with no ``access`` and ``dockyard_refresh: true``; it is refused as a
bearer token, and an access token is refused as a refresh token.

Verification goes through PyJWT (the JWT library of the Python ecosystem,
maintained since 2011, used by Flask-JWT, Django REST and most OIDC clients)
with `cryptography` doing the signature math, instead of hand-written JOSE
code, where every classic JWT bug lives. Its rules here:

- Only asymmetric algorithms are accepted, and only with the configured
  issuer's keys: ``alg: none`` and HS256-signed-with-the-public-key fail
  before any claim is read.
- ``iss`` picks the trusted issuer (ours or an external one); ``aud`` must
  be that issuer's audience; ``exp`` is required and checked.
- A token grants only its ``access`` claims: a token for repository A grants
  nothing on B. ``registry:catalog:*`` allows listing; ``registry:usage:*``
  lets an administrator's token read registry-wide usage (`shared.auth.admin`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.auth.credentials import VerifiedCache
from shared.auth.identity import TOKEN, Identity
from shared.auth.policy import ALL

ASYMMETRIC = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384",
              "PS512", "EdDSA"]
LEEWAY = 5
REFRESH_CLAIM = "dockyard_refresh"
BINDING_CLAIM = "dockyard_binding"
# The largest token worth parsing; real ones are well under 8 KiB.
MAX_TOKEN = 16 * 1024


class InvalidToken(Exception):
    """The token is refused; the message is for logs and never holds the token."""


# -- scopes ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """``repository:NAME:pull,push`` items (space-separated in one value, or repeated).

    Unknown types and malformed items are skipped: the spec says a server
    grants what it can of a request.
    """
    scopes = []
    for value in values:
        for item in value.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if not kind or not name or not actions:
                continue
            kind = kind.split("(")[0]
            scopes.append(Scope(kind, name, frozenset(a for a in actions.split(",") if a)))
    return scopes


# -- keys --------------------------------------------------------------------

def generate_key(path: str | os.PathLike[str]) -> None:
    """A new EC P-256 private key at `path` (mode 0600), for ES256 tokens."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


@dataclass(frozen=True)
class SigningKey:
    private: Any
    algorithm: str
    kid: str
    pem: bytes

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        pem = Path(path).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError(f"{path}: an EC key must be on P-256 (ES256)")
            alg = "ES256"
        elif isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        else:
            raise ValueError(f"{path}: expected an EC P-256 or RSA private key")
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = base64.b32encode(hashlib.sha256(der).digest()[:20]).decode().rstrip("=")
        return cls(key, alg, kid, pem)

    @property
    def public(self) -> Any:
        return self.private.public_key()


def load_public_keys(path: str | os.PathLike[str]) -> list[Any]:
    """Public keys from a PEM bundle (public keys and/or certificates) or a JWKS file."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"{"):
        return [k.key for k in jwt.PyJWKSet.from_json(data.decode()).keys]
    keys = []
    for block in data.split(b"-----END ")[:-1]:
        start = block.find(b"-----BEGIN ")
        if start < 0:
            continue
        kind = block[start + 11:block.find(b"-----", start + 11)]
        pem = block[start:] + b"-----END " + kind + b"-----\n"
        if kind == b"CERTIFICATE":
            keys.append(x509.load_pem_x509_certificate(pem).public_key())
        elif kind == b"PUBLIC KEY":
            keys.append(serialization.load_pem_public_key(pem))
    if not keys:
        raise ValueError(f"{path}: no public key or certificate found")
    return keys


# -- issuing -----------------------------------------------------------------

class TokenIssuer:
    def __init__(self, key: SigningKey, issuer: str, service: str, lifetime: int,
                 refresh_lifetime: int) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime

    def _sign(self, claims: dict[str, Any], lifetime: int) -> tuple[str, int]:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.service, "iat": now, "nbf": now - 1,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex, **claims}
        token = jwt.encode(claims, self.key.private, algorithm=self.key.algorithm,
                           headers={"kid": self.key.kid})
        return token, now

    def access_token(self, subject: str, scopes: Iterable[Scope]) -> tuple[str, int]:
        """(token, issued_at) granting exactly `scopes` (already intersected with policy)."""
        return self._sign({"sub": subject, "access": [s.claim() for s in scopes]},
                          self.lifetime)

    def refresh_token(self, subject: str, binding: str) -> str:
        """`binding` (a fingerprint of the user's password entry) ends the token's
        validity when the password changes."""
        return self._sign({"sub": subject, REFRESH_CLAIM: True, BINDING_CLAIM: binding},
                          self.refresh_lifetime)[0]


# -- verifying ---------------------------------------------------------------

@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str
    keys: tuple[Any, ...]
    own: bool


def _access(claims: Mapping[str, Any]) -> tuple[dict[str, frozenset[str]], bool, bool]:
    """(repository grants, catalog scope, usage scope) of the ``access`` claim."""
    raw = claims.get("access", [])
    if not isinstance(raw, list):
        raise InvalidToken("access claim is not a list")
    grants: dict[str, frozenset[str]] = {}
    catalog = usage = False
    for entry in raw:
        if not isinstance(entry, dict):
            raise InvalidToken("access entry is not an object")
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(name, str) or not isinstance(actions, list) or not all(
                isinstance(a, str) for a in actions):
            raise InvalidToken("malformed access entry")
        acts = ALL if "*" in actions else frozenset(actions) & ALL
        if kind == "repository":
            grants[name] = grants.get(name, frozenset()) | acts
        elif kind == "registry" and name == "catalog" and actions:
            catalog = True
        elif kind == "registry" and name == "usage" and actions:
            usage = True
    return grants, catalog, usage


class TokenVerifier:
    def __init__(self, trusted: Iterable[TrustedIssuer], cache: VerifiedCache[Any]) -> None:
        self._trusted = {t.issuer: t for t in trusted}
        self._cache = cache

    def _decode(self, token: str) -> tuple[TrustedIssuer, dict[str, Any]]:
        if len(token) > MAX_TOKEN:
            raise InvalidToken("token too large")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise InvalidToken(f"not a JWT: {type(e).__name__}") from None
        if not isinstance(unverified, dict) or header.get("alg") not in ASYMMETRIC:
            raise InvalidToken("algorithm not accepted or claims not an object")
        issuer = unverified.get("iss")
        trusted = self._trusted.get(issuer) if isinstance(issuer, str) else None
        if trusted is None:
            raise InvalidToken("unknown issuer")
        last: Exception | None = None
        for key in trusted.keys:
            try:
                claims = jwt.decode(token, key, algorithms=ASYMMETRIC,
                                    audience=trusted.audience, issuer=trusted.issuer,
                                    leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]})
                return trusted, claims
            except jwt.InvalidSignatureError as e:
                last = e
            except (jwt.PyJWTError, ValueError, TypeError) as e:
                raise InvalidToken(f"refused: {type(e).__name__}") from None
        raise InvalidToken(f"refused: {type(last).__name__}")

    def identity(self, token: str) -> Identity:
        """The identity an access token proves; raises InvalidToken."""
        key = self._cache.key(token)
        hit = self._cache.get(key)
        if hit is not None:
            identity, expires = hit
            if expires > time.time():
                return identity
        trusted, claims = self._decode(token)
        if claims.get(REFRESH_CLAIM):
            raise InvalidToken("a refresh token is not an access token")
        subject = claims.get("sub", "")
        if not isinstance(subject, str):
            raise InvalidToken("sub is not a string")
        grants, catalog, usage = _access(claims)
        identity = Identity(subject, TOKEN, grants, catalog, use_policy=trusted.own,
                            usage=usage)
        expires = float(claims["exp"])
        self._cache.put(key, (identity, expires), ttl=max(0.0, expires - time.time()))
        return identity

    def refresh_subject(self, token: str) -> tuple[str, str]:
        """(subject, binding) of one of our refresh tokens; raises InvalidToken."""
        trusted, claims = self._decode(token)
        if not trusted.own or not claims.get(REFRESH_CLAIM):
            raise InvalidToken("not a refresh token of this registry")
        subject = claims.get("sub")
        binding = claims.get(BINDING_CLAIM)
        if not isinstance(subject, str) or not subject or not isinstance(binding, str):
            raise InvalidToken("refresh token without a subject")
        return subject, binding


def describe(token: str) -> str:
    """A safe label for logs: a hash prefix of the token, never the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def unverified_claims(token: str) -> dict[str, Any]:
    """For tests and debugging only: the claims without any check."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
