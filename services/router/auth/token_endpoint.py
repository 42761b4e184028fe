"""The built-in Docker token server at /auth/token.

GET (the Docker token spec's "token" flow): optional Basic credentials,
``service``, one or more ``scope``, ``offline_token=true`` for a refresh
token. POST (its OAuth2 flow): a form with ``grant_type=password``
(``username``, ``password``, ``access_type=offline`` for a refresh token) or
``grant_type=refresh_token`` (``refresh_token``), and ``scope``.

A token grants, for each scope asked, the intersection of the actions asked
and those the policy gives the caller now: never more, and nothing for a
repository not asked. ``registry:usage:*`` goes to administrators only
(`shared.auth.admin`). Without credentials the caller is anonymous, and gets
what anonymous rules give (the way public repositories are pulled). Bad
credentials get 401 with a Basic challenge; too many of them 429.
"""

from __future__ import annotations

import datetime
import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

import falcon

from services.router.auth.controller import AccessController
from shared import errors
from shared.auth import admin
from shared.auth.identity import ANONYMOUS, PASSWORD, Identity
from shared.auth.policy import ACTIONS, ALL
from shared.auth.tokens import InvalidToken, Scope, parse_scopes
from shared.validation import is_valid_name

MAX_FORM = 64 * 1024


class TokenResource:
    def __init__(self, access: AccessController) -> None:
        self._access = access

    def _bad_login(self) -> errors.RegistryError:
        err = errors.Unauthorized("invalid username or password")
        err.headers = {"WWW-Authenticate": f'Basic realm="{self._access.basic_realm}"'}
        return err

    def _grant(self, identity: Identity, scopes: list[Scope]) -> list[Scope]:
        granted = []
        for scope in scopes:
            if scope.type == "repository" and is_valid_name(scope.name):
                asked = ALL if "*" in scope.actions else scope.actions
                actions = asked & self._access.allowed(identity, scope.name)
                granted.append(Scope("repository", scope.name, actions))
            elif scope.type == "registry" and scope.name == "catalog" and (
                    not identity.anonymous or self._access.policy.anonymous_anywhere):
                granted.append(Scope("registry", "catalog", frozenset({"*"})))
            elif scope.type == "registry" and scope.name == "usage" and \
                    admin.is_administrator(self._access.policy, identity.name):
                granted.append(Scope("registry", "usage", frozenset({"*"})))
        return granted

    def _answer(self, resp: falcon.Response, identity: Identity, scopes: list[Scope],
                refresh: bool, oauth: bool) -> None:
        granted = self._grant(identity, scopes)
        token, issued = self._access.issuer.access_token(identity.name, granted)
        body: dict[str, Any] = {
            "token": token, "access_token": token,
            "expires_in": self._access.issuer.lifetime,
            "issued_at": datetime.datetime.fromtimestamp(issued, datetime.UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if oauth:
            # The token spec's OAuth2 answer: the scope granted, which may be less
            # than the scope asked (RFC 6749 5.1), never what was only asked.
            body["scope"] = " ".join(
                f"{s.type}:{s.name}:{','.join(a for a in (*ACTIONS, '*') if a in s.actions)}"
                for s in granted if s.actions)
        htpasswd = self._access.htpasswd
        binding = htpasswd.fingerprint(identity.name) if htpasswd is not None else None
        if refresh and not identity.anonymous and binding is not None:
            body["refresh_token"] = self._access.issuer.refresh_token(identity.name, binding)
        resp.content_type = "application/json"
        resp.set_header("Cache-Control", "no-store")
        resp.data = json.dumps(body).encode()

    def _password_identity(self, user: str, password: str, address: str) -> Identity:
        if not self._access.login(user, password, address):
            raise self._bad_login()
        return Identity(user, PASSWORD)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header("Authorization") or ""
        identity = ANONYMOUS
        if header:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "basic":
                raise self._bad_login()
            try:
                user, password = self._access.basic_credentials(value)
            except errors.RegistryError:
                raise self._bad_login() from None
            identity = self._password_identity(user, password, self._access.client_address(req.env))
        scopes = parse_scopes(req.get_param_as_list("scope") or [])
        offline = (req.get_param("offline_token") or "").lower() == "true"
        self._answer(resp, identity, scopes, offline, oauth=False)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length or 0
        if length > MAX_FORM:
            raise errors.RegistryError("form too large")
        raw = req.bounded_stream.read(length) if length else b""
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            raise errors.RegistryError("malformed form") from None
        grant = form.get("grant_type", "")
        scopes = parse_scopes([form.get("scope", "")])
        if grant == "password":
            user = form.get("username", "")
            if not user:
                raise self._bad_login()
            identity = self._password_identity(user, form.get("password", ""),
                                               self._access.client_address(req.env))
            refresh = form.get("access_type", "") == "offline"
        elif grant == "refresh_token":
            try:
                subject, binding = self._access.tokens.refresh_subject(
                    form.get("refresh_token", ""))
            except InvalidToken:
                raise self._bad_login() from None
            # Refused once the user is removed or their password changed.
            htpasswd = self._access.htpasswd
            current = htpasswd.fingerprint(subject) if htpasswd is not None else None
            if current is None or not hmac.compare_digest(current, binding):
                raise self._bad_login()
            identity, refresh = Identity(subject, PASSWORD), True
        else:
            raise errors.RegistryError("unsupported grant_type",
                                       detail={"grant_type": grant[:50]})
        self._answer(resp, identity, scopes, refresh, oauth=True)
