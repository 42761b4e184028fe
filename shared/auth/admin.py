"""Registry-wide administration: who is an administrator, and which callers act as one.

Registry-wide answers such as usage (``GET /api/v1/usage``) name every
repository and its size, which no narrower right may see. Rules:

- **An administrator** is a user whom a rule for every repository (``**``)
  lets delete, by name, by group or as any authenticated caller. The access
  policy alone decides it, at each request, so removing a user from the rule
  ends their administration at once, whatever tokens they hold.
- **By password** (HTTP Basic), an administrator acts as one.
- **By token,** an administrator acts as one only with a token of this
  registry's own issuer (signed with its key, see `shared.auth.tokens`) that
  carries the scope `USAGE_SCOPE`, ``registry:usage:*``. The token endpoint
  grants that scope to administrators only; any other caller who asks for it
  gets a token without it. A token that lacks it gets 401 with
  ``error="insufficient_scope"`` and a challenge naming it, so a client (the
  web UI, or anything that follows Docker's token flow) asks for a new one.
- **An external issuer's token** never administers: such an issuer decides
  repository grants for its own users, and the policy that defines an
  administrator is this registry's, not the issuer's.
- **Anyone else** gets the refusal a non-administrator always got: 401 when
  anonymous, 403 DENIED when signed in, whatever their token carries. The
  answer never says more to a non-administrator than that.

Why a scope of its own, and not ``registry:catalog:*``: here the catalog
scope goes to every signed-in user (catalog and search answers are filtered
to what each caller may pull), so it cannot mark an administrator; and a
token asked for to list repositories should not also read the registry's
sizes. ``registry:usage:*`` follows the catalog's form (type ``registry``,
the resource's name, ``*`` for its one operation).
"""

from __future__ import annotations

from enum import Enum

from shared.auth.identity import PASSWORD, Identity
from shared.auth.policy import DELETE, Policy
from shared.globs import compile_glob

USAGE_SCOPE = "registry:usage:*"
_EVERY_REPOSITORY = compile_glob("**").pattern


class Verdict(Enum):
    ALLOWED = "allowed"
    INSUFFICIENT_SCOPE = "insufficient_scope"  # an administrator's token without the scope
    DENIED = "denied"


def is_administrator(policy: Policy, user: str) -> bool:
    """Whether `user` ("" for anonymous: never) may delete in every repository (``**``)."""
    if not user:
        return False
    groups = policy.groups_of(user)
    return any(
        any(p.pattern == _EVERY_REPOSITORY for p in rule.patterns)
        and DELETE in (rule.authenticated | (
            rule.actions if user in rule.users or groups & rule.groups else frozenset()))
        for rule in policy.rules)


def decide(policy: Policy, identity: Identity) -> Verdict:
    """Whether `identity` acts as an administrator (the module's rules)."""
    if not is_administrator(policy, identity.name):
        return Verdict.DENIED
    if identity.via == PASSWORD:
        return Verdict.ALLOWED
    if not identity.use_policy:  # an external issuer's token
        return Verdict.DENIED
    return Verdict.ALLOWED if identity.usage else Verdict.INSUFFICIENT_SCOPE
