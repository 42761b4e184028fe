"""Retention policies: which tags the collector removes before it marks.

A policy is one line of the ``gc.retention`` list::

    <repository pattern> [keep_last=N] [max_age=AGE] [keep=PATTERN,PATTERN...]

for example ``"ci/** keep_last=10 max_age=30d keep=v*,release-*"``. Patterns
are `shared.globs` globs, as in access rules (``*`` stays within one path
segment, ``**`` crosses ``/``); AGE is a number with ``s``,
``m``, ``h``, ``d`` or ``w``. The first policy whose pattern matches a
repository's name applies to it; a repository no policy matches keeps
every tag.

Within a repository, tags matching a ``keep`` pattern are never removed.
Of the others, a tag is removed when it is not among the ``keep_last``
newest *and* was pushed longer than ``max_age`` ago; a condition left out
holds for every tag, so ``keep_last=5`` alone keeps the five newest and
``max_age=30d`` alone keeps what was pushed in the last 30 days. A tag's
age is the time it was last pushed (`services.index.schema`, ``tagtimes``),
or its manifest's when the index has no time for it.

A removal names the digest the tag had when the policy chose it, and the
index deletes the tag only if it still names that digest: a tag pushed again
meanwhile is the new push's and stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared import globs

_AGE = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    pattern: str
    keep_last: int | None = None
    max_age: float | None = None
    keep: tuple[str, ...] = ()

    def matches(self, repository: str) -> bool:
        return globs.matches(self.pattern, repository)


@dataclass(frozen=True, slots=True)
class Removal:
    repository: str
    tag: str
    digest: str
    pushed: float


def parse_age(text: str) -> float:
    m = _AGE.fullmatch(text.strip())
    if m is None:
        raise PolicyError(f"not an age: {text!r} (a number with s, m, h, d or w)")
    return float(int(m.group(1)) * _UNITS[m.group(2)])


def parse(line: str) -> Policy:
    parts = line.split()
    if not parts:
        raise PolicyError("empty retention policy")
    pattern, options = parts[0], parts[1:]
    keep_last: int | None = None
    max_age: float | None = None
    keep: tuple[str, ...] = ()
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise PolicyError(f"{line!r}: expected key=value, got {option!r}")
        if key == "keep_last":
            if not value.isdigit():
                raise PolicyError(f"{line!r}: keep_last must be a whole number")
            keep_last = int(value)
        elif key == "max_age":
            max_age = parse_age(value)
        elif key == "keep":
            keep = tuple(p for p in value.split(",") if p)
        else:
            raise PolicyError(f"{line!r}: unknown option {key!r} "
                              "(keep_last, max_age or keep)")
    if keep_last is None and max_age is None:
        raise PolicyError(f"{line!r}: needs keep_last or max_age, or it removes nothing")
    for glob in (pattern, *keep):
        try:
            globs.compile_glob(glob)
        except globs.GlobError as e:
            raise PolicyError(f"{line!r}: {e}") from None
    return Policy(pattern, keep_last, max_age, keep)


def parse_all(lines: Iterable[str]) -> list[Policy]:
    return [parse(line) for line in lines]


def policy_for(policies: list[Policy], repository: str) -> Policy | None:
    return next((p for p in policies if p.matches(repository)), None)


def select(policy: Policy, repository: str, tags: dict[str, str],
           pushed: dict[str, float], now: float) -> list[Removal]:
    """The tags `policy` removes from a repository's `tags` (tag -> digest), given
    when each was pushed."""
    candidates = [t for t in tags
                  if not globs.matches_any(policy.keep, t)]
    # Newest first; the tag's name breaks ties so that the choice is stable.
    candidates.sort(key=lambda t: (-pushed.get(t, 0.0), t))
    removals = []
    for rank, tag in enumerate(candidates):
        beyond_count = policy.keep_last is None or rank >= policy.keep_last
        too_old = policy.max_age is None or now - pushed.get(tag, 0.0) > policy.max_age
        if beyond_count and too_old:
            removals.append(Removal(repository, tag, tags[tag], pushed.get(tag, 0.0)))
    return removals
