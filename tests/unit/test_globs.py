"""shared/globs: the one pattern language of access rules, webhook filters and
retention policies."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import globs
from tests.unit.props import PROPERTY


@pytest.mark.parametrize("pattern, name, expected", [
    ("team-a/**", "team-a/x", True), ("team-a/**", "team-a/x/y", True),
    ("team-a/**", "team-a", False), ("team-a/**", "team-ab/x", False),
    ("*/x", "a/x", True), ("*/x", "a/b/x", False), ("a/?", "a/b", True),
    ("a/?", "a/bc", False), ("a/?", "a//", False), ("**", "anything/at/all", True),
    ("a.b", "axb", False), ("a+b", "a+b", True),
    ("lib/[xy]", "lib/x", True), ("lib/[xy]", "lib/z", False),
    ("lib/[!xy]", "lib/z", True), ("lib/[!xy]", "lib/x", False),
    ("lib[!x]a", "lib/a", False), ("v[0-9]*", "v1.2", True), ("v[0-9]*", "vx", False),
    ("lib/[x", "lib/[x", True), ("lib/[]x]", "lib/]", True), ("a\\b", "a\\b", True),
])
def test_globs(pattern: str, name: str, expected: bool) -> None:
    assert globs.matches(pattern, name) is expected


def test_a_reversed_range_is_refused() -> None:
    with pytest.raises(globs.GlobError):
        globs.compile_glob("v[z-a]")


segment = st.text(alphabet="ab.-_", min_size=1, max_size=4)
names = st.lists(segment, min_size=1, max_size=4).map("/".join)
patterns = st.text(alphabet="ab*?/[]!-\\.^$()+{}", max_size=10)


@PROPERTY
@given(patterns, names)
def test_any_pattern_compiles_or_is_refused_and_never_lets_star_cross_a_slash(
        pattern: str, name: str) -> None:
    try:
        regex = globs.compile_glob(pattern)
    except globs.GlobError:
        return
    assert isinstance(regex, re.Pattern)
    # Within one segment, and without **, a glob agrees with the shell's.
    if "/" not in name and "**" not in pattern and "/" not in pattern \
            and "\\" not in pattern:
        assert globs.matches(pattern, name) is fnmatch.fnmatchcase(name, pattern)
    # Without ** (and sets, which may hold a / that they never match), a match
    # has exactly the pattern's slashes: nothing else crosses a segment.
    if "**" not in pattern and "[" not in pattern and globs.matches(pattern, name):
        assert name.count("/") == pattern.count("/")
