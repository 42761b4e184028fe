"""The `auth` and `access` configuration: whether access control is on, and shape checks.

Access control is on as soon as any of these is configured: an htpasswd file,
an external token issuer, or an ``access`` rule. Then every request needs a
rule that grants it; with none of them, the registry is open (and
`dockyard serve --host 0.0.0.0` warns about it).
"""

from __future__ import annotations

from typing import Any

from shared.auth.policy import Policy

EXTERNAL_KEYS = frozenset({"issuer", "audience", "keys"})


def enabled(config: dict[str, Any]) -> bool:
    auth = config["auth"]
    return bool(auth["htpasswd"] or auth["external"] or config["access"])


def check(config: dict[str, Any]) -> None:
    """Raise ValueError naming the key of the first malformed rule or issuer."""
    Policy.from_config(config)
    for i, issuer in enumerate(config["auth"]["external"]):
        where = f"auth.external[{i}]"
        unknown = set(issuer) - EXTERNAL_KEYS
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key")
        for key in ("issuer", "keys"):
            if not isinstance(issuer.get(key), str) or not issuer[key]:
                raise ValueError(f"{where}.{key}: required, a string")
        if "audience" in issuer and not isinstance(issuer["audience"], str):
            raise ValueError(f"{where}.audience: expected a string")
