"""Who a request comes from: a user of the htpasswd file, a token's subject, or nobody.

An identity is decided once per request by the router and passed to storage
and the index in `IDENTITY_HEADER` (percent-encoded UTF-8; empty for
anonymous). The header is trusted because the router removes every
client-supplied ``X-Dockyard-*`` header, and the service-to-service signature
covers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

IDENTITY_HEADER = "X-Dockyard-Identity"
# WSGI environ key where the router keeps the request's Identity.
ENVIRON_KEY = "dockyard.identity"

PASSWORD, TOKEN, ANONYMOUS_VIA = "password", "token", "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    """`name` is "" for anonymous.

    `access` is what a token grants (repository -> actions), None for a
    password or anonymous caller, whose rights are the policy's alone.
    `catalog` says whether the caller may list (a token needs the
    ``registry:catalog:*`` scope). `usage` says whether a token carries
    ``registry:usage:*``, which an administrator's token needs for
    registry-wide answers (`shared.auth.admin`). `use_policy` is False for an
    external issuer's token: that issuer decided, and its claims are the grant.
    """

    name: str
    via: str
    access: Mapping[str, frozenset[str]] | None = None
    catalog: bool = True
    use_policy: bool = True
    usage: bool = False

    @property
    def anonymous(self) -> bool:
        return self.name == ""

    def header_value(self) -> str:
        return quote(self.name, safe="@.-_+")

    def describe(self) -> str:
        """For logs and audit lines: the name, or "-" for anonymous."""
        return self.name or "-"


ANONYMOUS = Identity("", ANONYMOUS_VIA)
