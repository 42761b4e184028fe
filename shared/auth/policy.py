"""Authorization rules: repository globs mapped to who may pull, push and delete.

Config shape (the ``access`` list; see docs/access-control.md)::

    - repositories: ["team-a/**"]
      users: [alice, ci-bot]       # these users ...
      groups: [team-a]             # ... and members of these groups (auth.groups)
      actions: [pull, push]        # ... may do these
      authenticated: [pull]        # any logged-in caller may do these
      anonymous: [pull]            # anyone, logged in or not, may do these

Rules add up: a caller's actions on a repository are the union over every rule
whose glob matches it. What no rule grants is denied. Globs are those of
`shared.globs` (``**`` crosses ``/``, ``*`` stays within one segment). Names
are compared as the registry stores them (lower case, already validated), so
case or encoding variants cannot slip past a rule.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.globs import compile_glob

PULL, PUSH, DELETE = "pull", "push", "delete"
ACTIONS = (PULL, PUSH, DELETE)
ALL = frozenset(ACTIONS)
NONE: frozenset[str] = frozenset()
RULE_KEYS = frozenset({"repositories", "users", "groups", "actions", "authenticated",
                       "anonymous"})
_CACHE_LIMIT = 65536


def _strings(rule: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = rule.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}.{key}: expected a list of non-empty strings")
    return value


def _actions(rule: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    values = _strings(rule, key, where)
    if "*" in values:
        return ALL
    unknown = set(values) - ALL
    if unknown:
        raise ValueError(f"{where}.{key}: unknown action {sorted(unknown)[0]!r}; "
                         f"expected {', '.join(ACTIONS)} or *")
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Rule:
    patterns: tuple[re.Pattern[str], ...]
    users: frozenset[str]
    groups: frozenset[str]
    actions: frozenset[str]
    authenticated: frozenset[str]
    anonymous: frozenset[str]

    @classmethod
    def parse(cls, raw: Any, where: str) -> Rule:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(raw) - RULE_KEYS
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key")
        repos = _strings(raw, "repositories", where)
        if not repos:
            raise ValueError(f"{where}.repositories: at least one pattern is required")
        rule = cls(tuple(compile_glob(p) for p in repos),
                   frozenset(_strings(raw, "users", where)),
                   frozenset(_strings(raw, "groups", where)),
                   _actions(raw, "actions", where), _actions(raw, "authenticated", where),
                   _actions(raw, "anonymous", where))
        if (rule.users or rule.groups) and not rule.actions:
            raise ValueError(f"{where}.actions: users or groups without actions")
        return rule

    def matches(self, repository: str) -> bool:
        return any(p.fullmatch(repository) for p in self.patterns)


def parse_groups(raw: Any) -> dict[str, frozenset[str]]:
    if not isinstance(raw, dict):
        raise ValueError("auth.groups: expected a mapping of group -> users")
    groups = {}
    for name, members in raw.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError(f"auth.groups.{name}: expected a list of user names")
        groups[str(name)] = frozenset(members)
    return groups


class Policy:
    """The rules and groups; `actions(user, repository)` is the whole answer."""

    def __init__(self, rules: Iterable[Rule], groups: Mapping[str, frozenset[str]]) -> None:
        self.rules = tuple(rules)
        self._member_of: dict[str, frozenset[str]] = {}
        for group, members in groups.items():
            for user in members:
                self._member_of[user] = self._member_of.get(user, frozenset()) | {group}
        self.anonymous_anywhere = any(r.anonymous for r in self.rules)
        self._cache: dict[tuple[str, str], frozenset[str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        rules = [Rule.parse(raw, f"access[{i}]") for i, raw in enumerate(config["access"])]
        return cls(rules, parse_groups(config["auth"]["groups"]))

    def groups_of(self, user: str) -> frozenset[str]:
        return self._member_of.get(user, frozenset())

    def actions(self, user: str, repository: str) -> frozenset[str]:
        """What `user` ("" for anonymous) may do on `repository`."""
        key = (user, repository)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        granted: set[str] = set()
        groups = self.groups_of(user)
        for rule in self.rules:
            if not rule.matches(repository):
                continue
            granted |= rule.anonymous
            if user:
                granted |= rule.authenticated
                if user in rule.users or groups & rule.groups:
                    granted |= rule.actions
        answer = frozenset(granted)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = answer
        return answer
