"""Retention policies: parsing, and which tags a policy removes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gc import retention

DAY = 86400.0


def test_parse_a_full_policy() -> None:
    p = retention.parse("ci/** keep_last=10 max_age=30d keep=v*,release-*")
    assert p == retention.Policy("ci/**", 10, 30 * DAY, ("v*", "release-*"))
    assert p.matches("ci/app") and p.matches("ci/team/app") and not p.matches("prod/app")
    # The globs of access rules: one * stays within a path segment.
    one_level = retention.parse("ci/* keep_last=1")
    assert one_level.matches("ci/app") and not one_level.matches("ci/team/app")


@pytest.mark.parametrize("line", ["", "x keep_last=ten", "x max_age=3y", "x keep=v*",
                                  "x color=blue", "x keep_last", "[z-a] keep_last=1",
                                  "x keep_last=1 keep=[z-a]"])
def test_bad_policies_are_refused(line: str) -> None:
    with pytest.raises(retention.PolicyError):
        retention.parse(line)


def test_first_matching_policy_applies() -> None:
    policies = retention.parse_all(["prod/* keep_last=100", "** keep_last=1"])
    assert retention.policy_for(policies, "prod/app").keep_last == 100
    assert retention.policy_for(policies, "dev/app").keep_last == 1


def test_keep_last_keeps_the_newest_and_protected_tags() -> None:
    tags = {f"t{i}": f"d{i}" for i in range(5)} | {"v1.0": "dv", "release-2": "dr"}
    pushed = {f"t{i}": float(i) for i in range(5)} | {"v1.0": -5.0, "release-2": -6.0}
    policy = retention.parse("* keep_last=2 keep=v*,release-*")
    removed = retention.select(policy, "r", tags, pushed, now=100.0)
    assert sorted(r.tag for r in removed) == ["t0", "t1", "t2"]
    assert all(r.digest == tags[r.tag] for r in removed)


def test_max_age_removes_only_old_tags() -> None:
    tags = {"old": "a", "new": "b"}
    removed = retention.select(retention.parse("* max_age=1d"), "r", tags,
                               {"old": 0.0, "new": 2 * DAY}, now=2.5 * DAY)
    assert [r.tag for r in removed] == ["old"]


@given(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True),
                       st.floats(0, 1e6), max_size=30),
       st.integers(0, 10), st.none() | st.floats(0, 1e6))
def test_select_never_removes_the_newest_n(pushed: dict[str, float], n: int,
                                           max_age: float | None) -> None:
    tags = {t: f"sha256:{i:064x}" for i, t in enumerate(pushed)}
    policy = retention.Policy("*", n, max_age, ("a*",))
    removed = {r.tag for r in retention.select(policy, "r", tags, pushed, now=1e6)}
    ranked = sorted((t for t in tags if not t.startswith("a")), key=lambda t: (-pushed[t], t))
    assert not removed & set(ranked[:n])
    assert not any(t.startswith("a") for t in removed)
    if max_age is not None:
        assert all(1e6 - pushed[t] > max_age for t in removed)
    else:
        assert removed == set(ranked[n:])
