"""Properties of every parser in shared/validation.py: valid input is accepted and
round-trips, everything else is refused with the one error class the caller maps to
an OCI error, never with an exception the services would turn into a 500."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from shared import errors
from shared.validation import (
    DIGEST_ALGORITHMS,
    MAX_NAME_LENGTH,
    Digest,
    check_name,
    check_tag,
    check_upload_id,
    is_digest_reference,
    is_valid_name,
    is_valid_tag,
    parse_content_range,
    parse_digest,
    parse_pagination,
    parse_range,
)
from tests.unit.props import FEW, PROPERTY, nasty_text

# The spec's grammars, written out again here so the tests do not trust the code's copy.
COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = rf"{COMPONENT}(?:/{COMPONENT})*"
TAG = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"

hex_digits = "0123456789abcdef"
# Built from parts rather than with from_regex, which is slow on this grammar.
_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def _component(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_alnum, min_size=1, max_size=4))
    seps = draw(st.lists(st.sampled_from([".", "_", "__", "-", "---"]),
                         min_size=len(parts) - 1, max_size=len(parts) - 1))
    return parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))


names = (st.lists(_component(), min_size=1, max_size=5).map("/".join)
         | st.integers(250, 260).map(lambda n: "a" * n))
tags = st.from_regex(TAG, fullmatch=True)


def digests(algorithm: str) -> st.SearchStrategy[str]:
    length = DIGEST_ALGORITHMS[algorithm]
    return st.text(hex_digits, min_size=length, max_size=length).map(
        lambda h: f"{algorithm}:{h}")


valid_digests = digests("sha256") | digests("sha512")


# -- names ---------------------------------------------------------------------------------


@PROPERTY
@given(names)
def test_grammar_names_are_valid_up_to_the_length_limit(name: str) -> None:
    assert is_valid_name(name) == (len(name) <= MAX_NAME_LENGTH)
    if len(name) <= MAX_NAME_LENGTH:
        assert check_name(name) == name


@PROPERTY
@given(nasty_text | names.map(lambda n: n + "/") | names.map(lambda n: "../" + n))
@example("a/../b")
@example("_layers")
@example("a//b")
@example("A")
@example("a" * 256)
def test_any_name_is_accepted_or_refused_with_name_invalid(text: str) -> None:
    try:
        assert check_name(text) == text
    except errors.NameInvalid as e:
        assert not is_valid_name(text)
        assert e.status == 400 and e.code == "NAME_INVALID"
        return
    assert is_valid_name(text)
    assert re.fullmatch(NAME, text)
    # What a valid name can never be, since it becomes a path on disk.
    components = text.split("/")
    assert all(c and c not in (".", "..") and not c.startswith(("_", "-", "."))
               for c in components)
    assert "\x00" not in text and text == text.lower()


# -- tags ----------------------------------------------------------------------------------


@PROPERTY
@given(tags)
def test_grammar_tags_are_valid(tag: str) -> None:
    assert is_valid_tag(tag)
    assert check_tag(tag) == tag
    # A tag can never be mistaken for a digest reference.
    assert not is_digest_reference(tag)


@PROPERTY
@given(nasty_text)
@example("a" * 129)
@example("-leading")
@example(".hidden")
@example("v1\n")
def test_any_tag_is_accepted_or_refused_with_tag_invalid(text: str) -> None:
    try:
        check_tag(text)
    except errors.TagInvalid as e:
        assert not is_valid_tag(text)
        assert e.status == 400
        return
    assert re.fullmatch(TAG, text)
    assert len(text) <= 128


# -- digests -------------------------------------------------------------------------------


@PROPERTY
@given(valid_digests)
def test_valid_digests_round_trip(text: str) -> None:
    digest = parse_digest(text)
    assert str(digest) == text
    assert digest == Digest(*text.split(":"))
    assert is_digest_reference(text)


@PROPERTY
@given(nasty_text | valid_digests.map(str.upper) | valid_digests.map(lambda d: d[:-1])
       | valid_digests.map(lambda d: d + "0") | valid_digests.map(lambda d: d + "\n"))
@example("md5:" + "0" * 32)
@example("sha384:" + "0" * 96)
@example("sha256:" + "0" * 63 + "/")
@example("sha256:../../" + "0" * 58)
@example(":")
def test_any_digest_is_parsed_or_refused_with_digest_invalid(text: str) -> None:
    try:
        digest = parse_digest(text)
    except errors.DigestInvalid as e:
        assert e.status == 400 and e.code == "DIGEST_INVALID"
        return
    # Parsed: only what is safe to use as a path component and verifiable.
    assert digest.algorithm in DIGEST_ALGORITHMS
    assert len(digest.hex) == DIGEST_ALGORITHMS[digest.algorithm]
    assert set(digest.hex) <= set(hex_digits)
    assert str(digest) == text


@PROPERTY
@given(nasty_text | st.text(hex_digits, min_size=32, max_size=32))
def test_upload_ids_are_32_lowercase_hex(text: str) -> None:
    try:
        assert check_upload_id(text) == text
    except errors.BlobUploadUnknown:
        assert not re.fullmatch("[0-9a-f]{32}", text)
        return
    assert re.fullmatch("[0-9a-f]{32}", text)


# -- Content-Range of upload chunks -------------------------------------------------------


@PROPERTY
@given(st.integers(0, 2**62), st.integers(0, 2**40),
       st.sampled_from(["{a}-{b}", "bytes {a}-{b}", "bytes={a}-{b}", "{a}-{b}/*",
                        "bytes {a}-{b}/{t}", " {a}-{b} "]))
def test_content_range_parses_ordered_ranges(start: int, span: int, shape: str) -> None:
    end = start + span
    value = shape.format(a=start, b=end, t=end + 1)
    assert parse_content_range(value) == (start, end)


@PROPERTY
@given(st.integers(1, 2**62), st.integers(1, 2**40))
def test_content_range_refuses_backwards_ranges(end: int, back: int) -> None:
    with pytest.raises(errors.RangeInvalid) as e:
        parse_content_range(f"{end + back}-{end}")
    assert e.value.status == 416


@PROPERTY
@given(nasty_text)
@example("0-")
@example("-5")
@example("99999999999999999999-99999999999999999999")
@example("٣-٤")
def test_any_content_range_is_parsed_or_refused(text: str) -> None:
    try:
        start, end = parse_content_range(text)
    except errors.RangeInvalid:
        return
    assert 0 <= start <= end


# -- Range of blob GETs --------------------------------------------------------------------


# Digits, including a non-ASCII one that `\d` also matches.
_digits = st.text("0123456789\u0663", max_size=4)


def expected_range(first: int | None, last: int | None, size: int) -> object:
    """RFC 9110 14.1.2 for one byte range, as a model: a span, None (ignore), or 416."""
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return 416
        return (max(0, size - last), size - 1)
    if last is not None and last < first:
        return None
    if first >= size:
        return 416
    return (first, size - 1 if last is None else min(last, size - 1))


@PROPERTY
@given(st.integers(0, 10**6), st.one_of(st.none(), st.integers(0, 2 * 10**6)),
       st.one_of(st.none(), st.integers(0, 2 * 10**6)))
@example(1024, 1024, None)
@example(1024, None, 0)
@example(0, 0, None)
@example(10, 5, 2)
def test_range_matches_the_rfc(size: int, first: int | None, last: int | None) -> None:
    assume(first is not None or last is not None)
    value = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    want = expected_range(first, last, size)
    if want == 416:
        with pytest.raises(errors.RangeNotSatisfiable) as e:
            parse_range(value, size)
        assert e.value.status == 416
        assert e.value.headers["Content-Range"] == f"bytes */{size}"
    else:
        assert parse_range(value, size) == want


@PROPERTY
@given(nasty_text | st.builds("bytes={}-{}{}".format, _digits, _digits,
                              st.sampled_from(["", ",1-2", " ", "/9"])),
       st.integers(0, 5000))
@example("bytes=0-0,5-6", 100)
@example("items=0-5", 100)
@example("bytes=-", 100)
def test_any_range_is_a_span_inside_the_blob_or_ignored_or_416(text: str, size: int) -> None:
    try:
        span = parse_range(text, size)
    except errors.RangeNotSatisfiable:
        return
    if span is not None:
        first, last = span
        assert 0 <= first <= last < size


# -- pagination ----------------------------------------------------------------------------


@PROPERTY
@given(st.integers(0, 10**9 - 1), st.one_of(st.none(), st.text(max_size=20)),
       st.integers(1, 10**5))
def test_pagination_caps_n_at_the_maximum(n: int, last: str | None, maximum: int) -> None:
    assert parse_pagination(str(n), last, default=7, maximum=maximum) == (
        min(n, maximum), last or "")


@PROPERTY
@given(st.sampled_from([None, ""]), st.one_of(st.none(), st.text(max_size=20)))
def test_pagination_default(n: str | None, last: str | None) -> None:
    assert parse_pagination(n, last, default=7, maximum=100) == (7, last or "")


@PROPERTY
@given(nasty_text)
@example("²")
@example("-1")
@example("1e3")
@example("9999999999")
@example(" 5")
def test_any_n_is_a_count_or_pagination_number_invalid(n: str) -> None:
    try:
        count, _ = parse_pagination(n, None, default=7, maximum=100)
    except errors.PaginationNumberInvalid as e:
        assert e.status == 400
        return
    assert 0 <= count <= 100


@FEW
@given(st.integers(0, 10**6))
def test_reference_kinds_do_not_overlap(n: int) -> None:
    # A numeric tag (common: build numbers) is a tag, never a digest.
    assert check_tag(str(n)) == str(n)
    assert not is_digest_reference(str(n))
