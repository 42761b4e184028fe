"""A `dockyard serve` with access control, and clients that log in: for the access tests
(tests/access) and the end-to-end login tests (tests/e2e/test_auth.py)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import urllib3
import yaml

from shared.auth.htpasswd import set_password
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

PASSWORDS = {"admin": "admin-pw", "alice": "alice-pw", "ci-bot": "bot-pw",
             "carol": "carol-pw", "reader": "reader-pw", "mallory": "mallory-pw"}
GROUPS = {"team-a": ["carol"]}
RULES: list[dict[str, Any]] = [
    {"repositories": ["public/**"], "anonymous": ["pull"]},
    {"repositories": ["team-a/**"], "users": ["alice", "ci-bot"], "groups": ["team-a"],
     "actions": ["pull", "push"]},
    {"repositories": ["readers/**"], "users": ["reader"], "actions": ["pull"]},
    {"repositories": ["**"], "users": ["admin"], "actions": ["pull", "push", "delete"]},
]


def basic(user: str, password: str | None = None) -> str:
    password = PASSWORDS[user] if password is None else password
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AuthClient(RegistryClient):
    """A RegistryClient that sends one Authorization header with every request."""

    def __init__(self, base_url: str, authorization: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(base_url)
        self.authorization = authorization
        if source is not None:
            self.http = urllib3.PoolManager(retries=False, timeout=60.0, maxsize=8,
                                            source_address=(source, 0))

    def request(self, method: str, url: str, body: Any = None,
                headers: dict[str, str] | None = None, **kw: Any) -> Any:
        headers = dict(headers or {})
        if self.authorization is not None:
            headers.setdefault("Authorization", self.authorization)
        return super().request(method, url, body, headers, **kw)

    def token(self, scopes: list[str], user: str | None = None,
              password: str | None = None) -> str:
        """A token from the registry's token endpoint, as `user` (None: anonymous)."""
        fields = [("service", "dockyard")] + [("scope", s) for s in scopes]
        headers = {"Authorization": basic(user, password)} if user else {}
        r = RegistryClient.request(self, "GET", "/auth/token", fields=fields, headers=headers)
        assert r.status == 200, (r.status, r.data)
        return json.loads(r.data)["token"]


def write_htpasswd(path: Path, passwords: dict[str, str]) -> None:
    """bcrypt entries; one written by Apache's own `htpasswd -B` when it is installed."""
    for user, password in passwords.items():
        if user == "admin" and shutil.which("htpasswd"):
            flag = "-bB" if path.exists() else "-cbB"
            subprocess.run(["htpasswd", flag, "-C", "5", str(path), user, password],
                           check=True, capture_output=True)
        else:
            set_password(path, user, password, rounds=4)


def start_secured(directory: Path, rules: list[dict[str, Any]] | None = None,
                  auth: dict[str, Any] | None = None,
                  passwords: dict[str, str] | None = None) -> Dockyard:
    directory.mkdir(parents=True, exist_ok=True)
    htpasswd = directory / "htpasswd"
    write_htpasswd(htpasswd, PASSWORDS if passwords is None else passwords)
    config = {"auth": {"htpasswd": str(htpasswd), "groups": GROUPS,
                       "failed_login_limit": 1000, **(auth or {})},
              "access": RULES if rules is None else rules}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return Dockyard(directory / "data", config=path).start()
