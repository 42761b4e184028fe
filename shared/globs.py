"""Repository and tag globs: one pattern language for every setting that names
repositories (access rules, webhook filters, retention policies) or tags
(retention's protected tags), so a pattern means the same thing everywhere.

A glob matches the whole name, case-sensitively:

- ``**`` matches any characters, ``/`` included (``team-a/**``: every
  repository under ``team-a/``, at any depth);
- ``*`` matches any run of characters within one path segment, never ``/``
  (``team-a/*`` matches ``team-a/app`` but not ``team-a/tools/lint``);
- ``?`` matches one character other than ``/``;
- ``[abc]``, ``[a-z]`` and ``[!abc]`` match one character of (or not of) a
  set, never ``/``; a ``[`` with no closing ``]`` is literal;
- everything else is literal.

Why ``*`` stops at ``/``: repository names are paths, and access rules are the
first place a user writes a glob. A rule meant for one level must not quietly
reach every nested repository; ``**`` says so when that is meant.
"""

from __future__ import annotations

import functools
import re


class GlobError(ValueError):
    pass


def _set(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex of the ``[...]`` set at `start`, and the index after it."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "!":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a leading ] is a member, as in the shell
    end = pattern.find("]", i)
    if end < 0:
        return None
    body = pattern[start + 1:end]
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    members = re.sub(r"([\\^\[\]])", r"\\\1", body)
    regex = f"(?!/)[{'^' if negate else ''}{members}]"
    try:
        re.compile(regex)
    except re.error as e:  # a reversed range such as [z-a]
        raise GlobError(f"bad set {pattern[start:end + 1]!r} in {pattern!r}: {e}") from None
    return regex, end + 1


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The compiled regex of `pattern`, to be used with ``fullmatch``.

    Raises GlobError for a pattern that cannot be compiled.
    """
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(r"[\s\S]*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^/]")
            i += 1
        elif pattern[i] == "[" and (found := _set(pattern, i)) is not None:
            out.append(found[0])
            i = found[1]
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def matches(pattern: str, name: str) -> bool:
    return compile_glob(pattern).fullmatch(name) is not None


def matches_any(patterns: list[str] | tuple[str, ...], name: str) -> bool:
    return any(matches(p, name) for p in patterns)
