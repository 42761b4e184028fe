"""Hypothesis settings and strategies shared by the unit tests."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Deterministic (derandomize: the same examples every run, no example database
# written into the tree), and no per-example deadline: a loaded CI machine is
# not a failure. Applied per test rather than as a global profile, so suites
# that use hypothesis differently (schemathesis) are left alone.
PROPERTY = settings(deadline=None, derandomize=True, database=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPERTY, max_examples=60)

# JSON values of any shape: what a client may put in a manifest body.
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)

# Text with the characters that break parsers most often.
nasty_text = st.text(
    alphabet=st.sampled_from(
        [*list("abcxyzAZ019-_.:/ =,;*+?()[]{}|\\^$\t\n\r\x00"), "²", "٣", "é", "\u200b"]
    ) | st.characters(),
    max_size=40,
)
