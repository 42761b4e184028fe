"""The storage backend interface: where storage's objects live.

Everything storage keeps is an object named by a key of `paths.Keys`: blobs,
link records, upload sessions. `BlobStore` and `UploadStore` speak only this
interface, so neither knows whether it has a directory
(`backends.filesystem`) or a bucket (`backends.s3`). The interface is as
narrow as distribution's storage driver, plus the three things a registry
shared by several replicas needs: records, sessions and locks.

The rules every backend keeps:

1. **Nothing partial is visible.** `put` and a `Staged` object's `commit`
   are atomic: a reader sees no object or the whole one, never a prefix.
   `stage` writes bytes where no reader looks, so a digest is verified
   before its blob appears under its key.
2. **Acknowledged means durable.** When a call returns, what it wrote
   survives a crash of this process and of the machine (fsync; the object
   store's own acknowledgement).
3. **Records** are small named values, the links: a layer link (empty), a
   manifest link (the media type), an upload marker (empty).
4. **Sessions** hold an upload's bytes, appended in order, each append all
   or nothing. Work on one session is serialized across every process
   sharing the backend: the filesystem holds the session's lock for as long
   as the caller works on it; S3 makes each change one conditional write of
   the session's state, so of two racing changes one fails (503, the client
   retries), and holds the lock too while parts are uploaded.
5. **Locks** (`lock`) are exclusive across every process sharing the
   backend and are released when their holder dies.
6. **Failures of the store** are `errors.Unavailable`: the client gets 503
   with Retry-After, never a 500, and no call waits longer than the
   backend's timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from services.storage.bodies import Body


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    mtime_ns: int


class Staged(Protocol):
    """Bytes written where no reader looks, until `commit` shows them under a key."""

    size: int

    def commit(self, key: str) -> None:
        """Make the bytes the object at `key`, atomically (replacing what was there)."""

    def discard(self) -> None:
        """Drop the bytes; nothing becomes visible."""


class Session(Protocol):
    """An upload's bytes, worked on under the session's lock."""

    size: int
    info: bytes | None     # what `create_session` stored with it

    def append(self, body: Body, hasher: hashlib._Hash | None) -> int:
        """Append the whole body (hashing it) or nothing; returns the new size."""

    def seal(self, body: Body, hasher: hashlib._Hash | None, key_hint: str) -> Staged:
        """Append the last chunk (hashing it) and return the session's bytes, whole,
        ready to be verified and committed, most likely to `key_hint`. Until the
        commit, the session stays as it was acknowledged (a failed PUT may be retried)."""

    def rehash(self, staged: Staged, algorithm: str) -> str:
        """The hex digest of the sealed bytes, when no running hash covers them."""

    def remove(self, marker: str) -> None:
        """Remove the session, its blob committed, and the record `marker` with it
        (`remove_session`, knowing what the session holds)."""


class Collector(Protocol):
    """The fences between writers and the garbage collector: `services.storage.fences`
    on a filesystem, `services.storage.redis_fences` on an object store."""

    def writing(self) -> AbstractContextManager[None]:
        """Held by a manifest PUT from its first touch until the index recorded it."""

    def blob(self, digest: Any, *, exclusive: bool = False) -> AbstractContextManager[None]:
        """Held around a touch of a blob or of a link to it."""

    def barrier(self) -> int:
        """The start time *T* of a collection, once no manifest PUT is in flight."""

    def collecting(self, wait: bool = False) -> AbstractContextManager[bool]:
        """One collection at a time; False when another runs."""

    def claim(self, items: Sequence[Any], cutoff: int | None,
              locks: Sequence[str] = ()) -> AbstractContextManager[list[bool]]:
        """Exclude the items' writers; which items are untouched since `cutoff`."""

    def delete_claimed(self, keys: list[str]) -> None:
        """Delete keys that `claim` said were untouched, inside the claim."""

    def remove_all_if_untouched(self, items: Sequence[Any],
                                cutoff: int) -> list[int | None]:
        """Delete each item untouched since `cutoff`; per item its bytes, or None."""

    def prune(self, before_ns: int) -> None:
        """Forget records of touches older than `before_ns`."""


class Backend(Protocol):
    kind: str
    fences: Collector

    # -- objects -------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and last write of `key`, or None when there is none."""

    def open(self, key: str, first: int = 0, length: int | None = None) -> BinaryIO:
        """A reader of `length` bytes (to the end when None) from `first`;
        FileNotFoundError when the object is missing."""

    def read(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it is missing."""

    def put(self, key: str, data: bytes) -> None:
        """Write a small object whole, atomically and durably."""

    def stage(self, src: BinaryIO, length: int, hasher: hashlib._Hash | None,
              key_hint: str) -> Staged:
        """Write exactly `length` bytes of `src`, hashing them; nothing is visible yet.
        `key_hint` is where the bytes will most likely be committed."""

    def stage_file(self, path: Path, hasher: hashlib._Hash, key_hint: str) -> Staged:
        """`stage` of a local file (a spooled body): taken over where it can be."""

    def delete(self, key: str) -> bool:
        """Remove `key`; False when it was not there (an object store, whose DELETE
        does not say, answers True)."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a directory ends in ``/``)."""

    def has_prefix(self, prefix: str) -> bool:
        """Whether any object's key starts with `prefix`."""

    def touch(self, key: str) -> bool:
        """Mark `key` as relied on now (for the collector); False when it is gone."""

    def redirect_url(self, key: str) -> str | None:
        """A URL a client may fetch the object from directly, or None."""

    def local_path(self, key: str) -> Path | None:
        """The object's file when this machine shares it (the router's direct reads)."""

    def fetch_url(self, key: str) -> str | None:
        """A URL the router may GET the object from itself, good for a few minutes
        (`services.router.store_fetch`), or None."""

    # -- records -------------------------------------------------------------

    def set_record(self, key: str, value: str) -> None:
        """Create or replace a small named value, atomically and durably; setting the
        value it has re-asserts it (`touch`)."""

    def get_record(self, key: str) -> str | None:
        """The record's value, or None when there is none."""

    # -- upload sessions -----------------------------------------------------

    def create_session(self, upload_id: str, info: bytes) -> None:
        """A new, empty session with its description (`uploads.UploadStore`)."""

    def session_info(self, upload_id: str) -> bytes | None:
        """The description `create_session` stored, or None when there is none."""

    def session_size(self, upload_id: str) -> int | None:
        """The bytes acknowledged so far, or None when the session is gone."""

    def session(self, upload_id: str, adding: int = 0) -> AbstractContextManager[Session]:
        """Work on the session, serialized as rule 4 says; FileNotFoundError when
        it is gone. `adding`: how many bytes the caller is about to append."""

    def remove_session(self, upload_id: str) -> None:
        """Remove what the session holds (its multipart upload too); missing is fine."""

    def sessions(self) -> Iterator[tuple[str, float]]:
        """Every session's id and the time of its newest object."""

    def purge_orphans(self, max_age: float) -> int:
        """Remove what crashed writers left outside any session; returns how many."""

    # -- coordination --------------------------------------------------------

    def lock(self, key: str) -> AbstractContextManager[None]:
        """Exclusive across every process sharing the backend."""

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether the store answers and takes writes, with details for /readyz."""
