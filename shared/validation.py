"""The one place where repository names, tags, digests and upload ids are validated.

Everything a request carries is checked here before it is used as a key or a
path, so the grammars below are also the storage service's first line of
defence against path traversal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared import errors

# The OCI distribution spec grammars (spec.md, "Pulling manifests").
_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")

# distribution caps names at 255 characters; deeper paths than that are abuse.
MAX_NAME_LENGTH = 255

# Lengths of the hex encodings of the algorithms we can verify.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


def check_name(name: str) -> str:
    if not is_valid_name(name):
        raise errors.NameInvalid(detail={"name": name[:300]})
    return name


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None


def check_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise errors.TagInvalid(detail={"tag": tag[:300]})
    return tag


def parse_digest(value: str) -> Digest:
    """Parse and validate a digest; only algorithms we can verify are accepted."""
    m = _DIGEST_RE.fullmatch(value)
    if m is None:
        raise errors.DigestInvalid("invalid digest", detail={"digest": value[:300]})
    algorithm, hexpart = m.group(1), m.group(2)
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise errors.DigestInvalid(
            "unsupported digest algorithm", detail={"digest": value[:300]}
        )
    if len(hexpart) != length or not all(c in "0123456789abcdef" for c in hexpart):
        raise errors.DigestInvalid("invalid digest", detail={"digest": value[:300]})
    return Digest(algorithm, hexpart)


def is_digest_reference(reference: str) -> bool:
    """A manifest reference is a digest when it has a colon; tags cannot."""
    return ":" in reference


def check_upload_id(upload_id: str) -> str:
    if _UPLOAD_ID_RE.fullmatch(upload_id) is None:
        raise errors.BlobUploadUnknown(detail={"uuid": upload_id[:100]})
    return upload_id


def parse_pagination(n: str | None, last: str | None, *, default: int,
                     maximum: int) -> tuple[int, str]:
    """Validate the `n` and `last` query parameters of the list endpoints.

    Without `n` a page holds `default` entries; a larger `n` than `maximum`
    is served `maximum` at a time, with a Link to the rest.
    """
    if n is None or n == "":
        count = default
    else:
        # isascii: str.isdigit() is also true of "²", which int() refuses.
        if not (n.isascii() and n.isdigit()) or len(n) > 9:
            raise errors.PaginationNumberInvalid(detail={"n": n[:50]})
        count = min(int(n), maximum)
    return count, last or ""


_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")


def parse_content_range(value: str) -> tuple[int, int]:
    """Parse an upload chunk's `Content-Range: <start>-<end>` (inclusive)."""
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if m is None:
        raise errors.RangeInvalid(detail={"Content-Range": value[:100]})
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise errors.RangeInvalid(detail={"Content-Range": value[:100]})
    return start, end


_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Resolve a blob GET's `Range: bytes=a-b` against a blob of `size` bytes.

    Returns the inclusive (first, last) byte positions, or None when the header
    is not a single byte range we understand (RFC 9110 lets us ignore it then
    and send the whole blob). Raises RangeNotSatisfiable for a range outside
    the blob.
    """
    m = _RANGE_RE.fullmatch(value.strip())
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        return None
    first_s, last_s = m.group(1), m.group(2)
    if first_s == "":
        # A suffix range: the last N bytes.
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise errors.RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    # Only an explicit last before first is an invalid range (ignored); an open
    # range starting at or past the end is unsatisfiable.
    if last_s != "" and int(last_s) < first:
        return None
    last = size - 1 if last_s == "" else int(last_s)
    if first >= size:
        raise errors.RangeNotSatisfiable(size)
    return first, min(last, size - 1)
