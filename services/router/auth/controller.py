"""Deciding, before any cache or backend sees a request, who sends it and whether it may.

`AccessController.authorize(environ, kind, name)` returns the caller's
Identity or raises the error to answer:

- no credentials, or bad ones: 401 UNAUTHORIZED with the challenge
  (``Bearer realm,service,scope`` in token mode, ``Basic realm`` in basic
  mode), and the same for a token that lacks a scope its holder could get;
- an authenticated caller the policy refuses: 403 DENIED;
- too many failed logins: 429 with Retry-After.

The answer depends only on the caller, the method and the repository name,
never on whether the repository exists, so a caller who may not pull learns
nothing about it. Names are checked first (NAME_INVALID), so ``..``, ``//``
and upper-case variants never reach the policy as a different name than the
one storage would act on.

Both schemes are accepted in either mode: a Basic header on every request
(distribution's htpasswd mode; verified passwords are remembered by keyed
hash, see `shared.auth.credentials`) and Bearer tokens.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Any

from services.router.auth.kinds import (  # noqa: F401 (re-exported)
    BASE,
    CATALOG,
    LISTINGS,
    SEARCH,
    SUMMARIES,
    UPLOAD,
    UPLOADS,
    USAGE,
)
from services.router.auth.listing import Cursors
from shared import errors
from shared.auth.access import mount_source, required, without_mount
from shared.auth.credentials import VerifiedCache
from shared.auth.htpasswd import Htpasswd
from shared.auth.identity import ANONYMOUS, PASSWORD, TOKEN, Identity
from shared.auth.policy import ACTIONS, DELETE, PULL, Policy
from shared.auth.ratelimit import FailedLogins
from shared.auth.tokens import (
    InvalidToken,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    TrustedIssuer,
    load_public_keys,
)
from shared.auth.upload_state import UploadBinding
from shared.globs import compile_glob
from shared.validation import is_valid_name

log = logging.getLogger("dockyard.auth")

_EVERY_REPOSITORY = compile_glob("**").pattern
MAX_HEADER = 16 * 1024


def _order(actions: frozenset[str]) -> str:
    return ",".join(a for a in ACTIONS if a in actions)


class AccessController:
    def __init__(self, config: dict[str, Any], key: SigningKey) -> None:
        auth = config["auth"]
        token = auth["token"]
        self.policy = Policy.from_config(config)
        self.htpasswd = Htpasswd(auth["htpasswd"]) if auth["htpasswd"] else None
        self.mode = auth["mode"]
        self.basic_realm = auth["realm"]
        self.token_realm = token["realm"]
        self.service = token["service"]
        self.passwords: VerifiedCache[Identity] = VerifiedCache(
            auth["credential_cache_ttl"], auth["credential_cache_size"])
        self._verifying: dict[bytes, threading.Lock] = {}
        self._verifying_lock = threading.Lock()
        self.limiter = FailedLogins(auth["failed_login_limit"], auth["failed_login_window"],
                                    redis=_redis(config),
                                    prefix=config["index"]["redis"]["key_prefix"])
        self.issuer = TokenIssuer(key, token["issuer"], token["service"], token["lifetime"],
                                  token["refresh_lifetime"])
        trusted = [TrustedIssuer(token["issuer"], token["service"], (key.public,), True)]
        for ext in auth["external"]:
            trusted.append(TrustedIssuer(ext["issuer"], ext.get("audience") or self.service,
                                         tuple(load_public_keys(ext["keys"])), False))
        # Tokens are remembered until they expire (bounded by the size).
        self.tokens = TokenVerifier(trusted, VerifiedCache(24 * 3600.0,
                                                           auth["credential_cache_size"]))
        self.uploads = UploadBinding(key.pem)
        self.cursors = Cursors(key.pem)

    # -- who -------------------------------------------------------------------

    @staticmethod
    def client_address(environ: dict[str, Any]) -> str:
        """The client's address. Behind the TLS terminator, waitress's proxy-headers
        middleware (router.trusted_proxy) has already put the client's own here."""
        return environ.get("REMOTE_ADDR", "")

    def login(self, user: str, password: str, address: str) -> bool:
        """Check a password, counting failures; raises TooManyRequests when over the limit."""
        wait = self.limiter.retry_after(user, address)
        if wait:
            raise errors.TooManyRequests("too many failed logins; try again later",
                                         headers={"Retry-After": str(wait)})
        if self.htpasswd is not None and self.htpasswd.verify(user, password):
            return True
        self.limiter.failed(user, address)
        log.warning("failed login for user %r from %s", user[:64], address)
        return False

    def basic_credentials(self, value: str) -> tuple[str, str]:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise self.unauthorized(None, "malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise self.unauthorized(None, "malformed Basic credentials")
        return user, password

    def authenticate(self, environ: dict[str, Any]) -> Identity:
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            return ANONYMOUS
        if len(header) > MAX_HEADER:
            raise self.unauthorized(None, "Authorization header too large")
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            try:
                return self.tokens.identity(value.strip())
            except InvalidToken as e:
                log.info("bearer token refused: %s", e)
                raise self.unauthorized(None, "invalid token", error="invalid_token") from None
        if scheme != "basic":
            raise self.unauthorized(None, "unsupported authorization scheme")
        if self.htpasswd is not None:
            self.htpasswd.refresh()
        generation = self.htpasswd.generation if self.htpasswd is not None else 0
        key = self.passwords.key(value.strip())
        hit = self.passwords.get(key, generation)
        if hit is not None:
            return hit
        # One bcrypt check per credential at a time: when an entry expires under
        # load, the client's other connections wait for it instead of each
        # paying bcrypt at once.
        with self._verifying_lock:
            lock = self._verifying.setdefault(key, threading.Lock())
        try:
            with lock:
                hit = self.passwords.get(key, generation)
                if hit is not None:
                    return hit
                user, password = self.basic_credentials(value)
                if not self.login(user, password, self.client_address(environ)):
                    raise self.unauthorized(None, "invalid username or password")
                identity = Identity(user, PASSWORD)
                self.passwords.put(key, identity, generation)
                return identity
        finally:
            with self._verifying_lock:
                self._verifying.pop(key, None)

    # -- whether ---------------------------------------------------------------

    def allowed(self, identity: Identity, repository: str) -> frozenset[str]:
        granted = (self.policy.actions(identity.name, repository) if identity.use_policy
                   else frozenset(ACTIONS))
        if identity.access is not None:
            granted = granted & identity.access.get(repository, frozenset())
        return granted

    def may_list(self, identity: Identity, repository: str) -> bool:
        """Whether a catalog or search answer may name `repository` to this caller."""
        if identity.via == TOKEN and identity.catalog and identity.use_policy:
            return PULL in self.policy.actions(identity.name, repository)
        return PULL in self.allowed(identity, repository)

    def authorize(self, environ: dict[str, Any], kind: str, name: str | None,
                  upload_id: str | None = None) -> Identity:
        try:
            identity = self.authenticate(environ)
        except errors.Unauthorized as e:
            # Bad credentials: the challenge names what this request needs.
            scope = None
            if kind in LISTINGS:
                scope = "registry:catalog:*"
            elif name is not None and kind != BASE and is_valid_name(name):
                scope = f"repository:{name}:{_order(required(environ))}"
            raise self.unauthorized(scope, e.message, getattr(e, "oauth_error", None)) from None
        if kind == BASE:
            if identity.anonymous:
                raise self.unauthorized(None, "authentication required")
            return identity
        if kind == USAGE:
            return self._administrator(identity)
        if kind in LISTINGS:
            if (identity.anonymous and not self.policy.anonymous_anywhere) or not (
                    identity.catalog or identity.access is None):
                raise self.unauthorized("registry:catalog:*", "authentication required")
            return identity
        assert name is not None
        if not is_valid_name(name):
            raise errors.NameInvalid(detail={"name": name[:300]})
        needs = required(environ, kind == UPLOAD)
        granted = self.allowed(identity, name)
        if not needs <= granted:
            raise self._refusal(identity, name, needs)
        if kind == UPLOADS:
            source = mount_source(environ)
            if source is not None and (not is_valid_name(source)
                                       or PULL not in self.allowed(identity, source)):
                # An ordinary upload (202), so the answer does not reveal the blob.
                environ["QUERY_STRING"] = without_mount(environ.get("QUERY_STRING", ""))
        if kind == UPLOAD and upload_id is not None and not self.uploads.check(
                environ.get("QUERY_STRING", ""), identity.name, name, upload_id):
            raise errors.BlobUploadUnknown(detail={"upload": upload_id[:100]})
        return identity

    def _administrator(self, identity: Identity) -> Identity:
        """An administrator: a caller, by password, whom a rule for every repository
        (``**``) lets delete. Registry-wide answers such as usage name every
        repository and its size, which no narrower right may see."""
        if identity.anonymous:
            raise self.unauthorized(None, "authentication required")
        groups = self.policy.groups_of(identity.name)
        admin = identity.access is None and any(
            any(p.pattern == _EVERY_REPOSITORY for p in rule.patterns)
            and DELETE in (rule.authenticated | (
                rule.actions if identity.name in rule.users or groups & rule.groups
                else frozenset()))
            for rule in self.policy.rules)
        if not admin:
            raise errors.Denied(detail=[{"Type": "registry", "Name": "usage",
                                         "Action": "admin"}])
        return identity

    def _refusal(self, identity: Identity, name: str,
                 needs: frozenset[str]) -> errors.RegistryError:
        scope = f"repository:{name}:{_order(needs)}"
        if identity.anonymous:
            return self.unauthorized(scope, "authentication required")
        if (identity.via == TOKEN and identity.use_policy
                and needs <= self.policy.actions(identity.name, name)):
            # The token was asked for less than its holder may have: ask for a new one.
            return self.unauthorized(scope, "insufficient scope", error="insufficient_scope")
        return errors.Denied(detail=[{"Type": "repository", "Name": name,
                                      "Action": _order(needs)}])

    # -- challenges ------------------------------------------------------------

    def challenge(self, scope: str | None, error: str | None = None,
                  environ: dict[str, Any] | None = None) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.basic_realm}"'
        realm = self.token_realm or "/auth/token"
        parts = [f'Bearer realm="{realm}"', f'service="{self.service}"']
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        return ",".join(parts)

    def unauthorized(self, scope: str | None, message: str,
                     error: str | None = None) -> errors.RegistryError:
        err = errors.Unauthorized(message)
        err.headers = {"WWW-Authenticate": self.challenge(scope, error)}
        err.oauth_error = error  # type: ignore[attr-defined]
        return err


def _redis(config: dict[str, Any]) -> Any:
    """The Redis that failed-login counts are shared in: the index's (router.events_url)."""
    url = config["router"]["events_url"]
    if not url:
        return None
    from shared import redis_client

    # No retries: a login must not wait on Redis; the counts fall back to memory.
    return redis_client.connect(redis_client.from_url(url), retry=None,
                                socket_timeout=1.0, socket_connect_timeout=1.0)


def absolute_realm(challenge: str, environ: dict[str, Any]) -> str:
    """Make a relative token realm absolute from the host and scheme the client used."""
    if 'realm="/' not in challenge:
        return challenge
    host = (environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST")
            or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}")
    scheme = environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme", "http")
    host = host.split(",")[0].strip()
    scheme = scheme.split(",")[0].strip()
    return challenge.replace('realm="/', f'realm="{scheme}://{host}/', 1)


def error_response(environ: dict[str, Any], start_response: Any,
                   err: errors.RegistryError, api_version: tuple[str, str]) -> list[bytes]:
    payload = errors.render(err)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
               api_version]
    for name, value in err.headers.items():
        if name == "WWW-Authenticate":
            value = absolute_realm(value, environ)
        headers.append((name, value))
    from falcon import code_to_http_status

    start_response(code_to_http_status(err.status), headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [payload]
