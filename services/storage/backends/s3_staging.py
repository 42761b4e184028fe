"""Bytes on their way into the bucket: staged objects and upload sessions
(`backends.s3` states the rules they keep)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack

from services.storage.backends.s3_io import NotFound, PreconditionFailed
from services.storage.bodies import CHUNK, Body, read_into
from services.storage.paths import Keys
from shared import errors

if TYPE_CHECKING:
    from services.storage.backends.s3 import S3Backend

# Tails up to this many bytes are kept in the session's state, larger ones as objects.
INLINE_TAIL = 1024 * 1024


def new_state(info: bytes) -> dict[str, Any]:
    return {"info": info, "size": 0, "mpu": None, "parts": [], "tail": None, "inline": b"",
            "sealed": None, "done": None}


class BytesStaged:
    """A body of at most one part, held in memory until its digest is verified."""

    def __init__(self, backend: S3Backend, data: bytes) -> None:
        self._backend = backend
        self.data = data
        self.size = len(data)

    def commit(self, key: str) -> None:
        self._backend.put(key, self.data)

    def discard(self) -> None:
        self.data = b""


class Chain(io.RawIOBase):
    """A session's tail, then the last chunk's body, which alone is hashed: the
    running hash covers the tail already."""

    def __init__(self, head: bytes, src: BinaryIO, hasher: hashlib._Hash | None) -> None:
        self._head = memoryview(head)
        self._src = src
        self._hasher = hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            n = readinto(view)
        else:
            data = self._src.read(len(view))
            n = len(data)
            view[:n] = data
        if n and self._hasher is not None:
            self._hasher.update(view[:n])
        return n or 0


class MultipartStaged:
    """A multipart upload aimed at `key`, all parts up: invisible until completed."""

    def __init__(self, backend: S3Backend, key: str, upload_id: str, size: int) -> None:
        self._backend = backend
        self.key = key
        self.upload_id = upload_id
        self.size = size
        self.parts: list[dict[str, Any]] = []

    def commit(self, key: str) -> None:
        self._backend.complete(self.key, self.upload_id, self.parts)
        if key != self.key:
            self._backend.copy(self.key, key, self.size)
            self._backend.delete(self.key)

    def discard(self) -> None:
        with contextlib.suppress(NotFound, errors.Unavailable):
            self._backend.call("abort_multipart_upload", Key=self.key,
                                UploadId=self.upload_id)


class ObjectStaged:
    """A sealed session's bytes, the object `key`; committing copies them (a blob
    committed by an earlier try of the PUT is there already)."""

    def __init__(self, backend: S3Backend, key: str, size: int) -> None:
        self._backend = backend
        self.key = key
        self.size = size

    def commit(self, key: str) -> None:
        if key != self.key:
            self._backend.copy(self.key, key, self.size)

    def discard(self) -> None:
        """The session's removal deletes the object with the rest of the session."""


class DirectStaged:
    """The last bytes of a session that uploaded no part, staged straight to the
    blob's key. Committing also records in the state, with a conditional write,
    that the session is done: an append that read the state before cannot then
    be acknowledged (its own conditional write fails), nor one that reads it
    after (a done session takes no more bytes)."""

    def __init__(self, staged: Any, session: S3Session) -> None:
        self._staged = staged
        self._session = session
        self.size = staged.size
        self.data = getattr(staged, "data", None)
        self.key = getattr(staged, "key", None)

    def commit(self, key: str) -> None:
        self._staged.commit(key)
        # The bytes are the blob's now: the state need not carry its tail any more.
        self._session.save_changes(done=key, inline=b"")

    def discard(self) -> None:
        self._staged.discard()


class S3Session:
    """An upload session read at one ETag of its state (see the module's rules).

    Every change is one conditional write of the state on that ETag; uploading
    parts, whose numbers two writers could both take, also holds the session's
    lock (`lock`), taken before anything is uploaded."""

    def __init__(self, backend: S3Backend, upload_id: str, state: dict[str, Any],
                 etag: str, held: contextlib.ExitStack, locked: bool = False) -> None:
        self._b = backend
        self._id = upload_id
        self._state = state
        self._etag = etag
        self._held = held
        self._locked = locked
        self.size = int(state["size"])
        info = state.get("info")
        self.info = info if isinstance(info, bytes) else None

    def lock(self) -> None:
        """Hold the session's lock until the session is left; the state must still
        be the one read, or the client retries."""
        if self._locked:
            return
        self._held.enter_context(self._b.lock(Keys.upload_lock(self._id)))
        self._locked = True
        _, etag = self._b.load_state(self._id)
        if etag != self._etag:
            raise errors.Unavailable("upload busy; retry", retry_after=1)

    def save_changes(self, **changes: Any) -> None:
        self._save({**self._state, **changes})

    def _save(self, state: dict[str, Any]) -> None:
        try:
            self._etag = self._b.put(Keys.upload(self._id, "state"), msgpack.packb(state),
                                     IfMatch=self._etag)
        except PreconditionFailed:
            raise errors.Unavailable("upload busy; retry", retry_after=1) from None
        self._state = state
        self.size = int(state["size"])
        self._b.remember_state(self._id, state, self._etag)

    def append(self, body: Body, hasher: hashlib._Hash | None) -> int:
        state = dict(self._state)
        if state["sealed"] or state.get("done"):
            raise errors.BlobUploadInvalid(detail={
                "reason": "the upload is complete; finish it with a PUT without a body"})
        b = self._b
        parts = [dict(p) for p in state["parts"]]
        tail = self._tail()
        # A part at most: what is left of the body after it fills one goes in the next.
        # A tail left by a replica with a larger part_size (a configuration being
        # rolled out) makes this session's parts larger too, never a failed chunk.
        part_size = max(b.part_size, len(tail) + 1)
        if len(tail) + body.length >= part_size:
            self.lock()
        buf = bytearray(min(part_size, len(tail) + body.length))
        view = memoryview(buf)
        view[:len(tail)] = tail
        filled = len(tail)
        data_key = Keys.upload(self._id, "data")
        created = None
        saving = False
        src = body.open()
        try:
            remaining = body.length
            while remaining:
                n = read_into(src, view[filled:filled + min(remaining, part_size - filled)])
                if hasher is not None:
                    hasher.update(view[filled:filled + n])
                filled += n
                remaining -= n
                if filled == part_size:
                    if state["mpu"] is None:
                        state["mpu"] = created = b.call("create_multipart_upload",
                                                         Key=data_key)["UploadId"]
                    parts.append(b.upload_part(data_key, state["mpu"], len(parts) + 1,
                                                view[:filled]))
                    filled = 0
            # A small tail travels in the state itself: one write acknowledges the chunk.
            inline = bytes(view[:filled]) if filled <= INLINE_TAIL else b""
            tail_key = (Keys.upload(self._id, f"tail-{uuid.uuid4().hex}")
                        if filled > INLINE_TAIL else None)
            if tail_key:
                b.put(tail_key, bytes(view[:filled]))
            saving = True
            self._save({**state, "parts": parts, "tail": tail_key, "inline": inline,
                        "size": self.size + body.length})
        except BaseException:
            # A state write that timed out may have landed: then what it names stays.
            if created is not None and not saving:
                with contextlib.suppress(Exception):
                    b.call("abort_multipart_upload", Key=data_key, UploadId=created)
            raise
        finally:
            if body.path is not None:
                src.close()
        if state["tail"]:
            # The tail the new state replaced; a leftover goes with the session.
            with contextlib.suppress(Exception):
                b.call("delete_object", Key=state["tail"])
        return self.size

    def seal(self, body: Body, hasher: hashlib._Hash | None, key_hint: str) -> Any:
        """With no whole part uploaded yet, the tail and the last chunk go straight to
        `key_hint` (one PutObject, or a multipart upload aimed there): no copy, and
        the session's state is not written. Otherwise the chunk is appended, and the
        multipart upload completed into ``data`` to be copied."""
        state = self._state
        b = self._b
        if state.get("done"):
            # An earlier try of this PUT committed the blob, then failed.
            if body.length:
                raise errors.BlobUploadInvalid(detail={"reason": "the upload is complete"})
            return ObjectStaged(b, state["done"], self.size)
        if not state["sealed"] and state["mpu"] is None:
            tail = self._tail()
            total = len(tail) + body.length
            if hasher is not None or total <= b.part_size:
                src = body.open()
                try:
                    reader = io.BufferedReader(Chain(tail, src, hasher), CHUNK)
                    return DirectStaged(b.stage(reader, total, None, key_hint), self)
                finally:
                    if body.path is not None:
                        src.close()
        if state["sealed"] and body.length:
            # A PUT sent again after it sealed the session and then failed (the
            # copy, the link): its body is the end of what was sealed, or refused.
            self._check_resent(body)
        elif body.length:
            self.append(body, hasher)
        return self._seal_parts()

    def _check_resent(self, body: Body) -> None:
        """Accept the final chunk again only if it is byte for byte the sealed end."""
        refused = errors.BlobUploadInvalid(detail={
            "reason": "the upload is complete and its last chunk differs from this body"})
        if body.length > self.size:
            raise refused
        src = body.open()
        try:
            with self._b.open(self._state["sealed"], self.size - body.length,
                              body.length) as sealed:
                buf = bytearray(min(CHUNK, body.length))
                remaining = body.length
                while remaining:
                    view = memoryview(buf)[:min(CHUNK, remaining)]
                    read_into(src, view)
                    if sealed.read(len(view)) != view:
                        raise refused
                    remaining -= len(view)
        finally:
            if body.path is not None:
                src.close()

    def _seal_parts(self) -> ObjectStaged:
        state = dict(self._state)
        if state["sealed"]:
            return ObjectStaged(self._b, state["sealed"], self.size)
        b = self._b
        data_key = Keys.upload(self._id, "data")
        if state["mpu"]:
            self.lock()
            parts = [dict(p) for p in state["parts"]]
            try:
                tail = self._tail()
                if tail:
                    parts.append(b.upload_part(data_key, state["mpu"], len(parts) + 1,
                                                memoryview(tail)))
                b.complete(data_key, state["mpu"], parts)
            except NotFound:
                # Completed by an earlier PUT that failed before it recorded so.
                done = b.stat(data_key)
                if done is None or done.size != self.size:
                    raise
            sealed = data_key
        elif state["tail"]:
            sealed = state["tail"]
        else:
            b.put(data_key, state.get("inline") or b"")
            sealed = data_key
        self._save({**state, "sealed": sealed})
        return ObjectStaged(b, sealed, self.size)

    def _tail(self) -> bytes:
        """The bytes after the last whole part: in the state, or an object of their own."""
        if self._state["tail"]:
            return self._b.read(self._state["tail"])
        return bytes(self._state.get("inline") or b"")

    def remove(self, marker: str) -> None:
        """One request: the objects the state names and the marker. What a crashed
        append left that the state does not name (a tail, parts) is not listed here;
        it goes with the session's other debris (`S3Backend.purge_orphans`, and
        sessions without a state, which the purger removes when they are old)."""
        state = self._state
        data_key = Keys.upload(self._id, "data")
        if state["mpu"] and not state["sealed"]:
            with contextlib.suppress(NotFound):
                self._b.call("abort_multipart_upload", Key=data_key, UploadId=state["mpu"])
        keys = {Keys.upload(self._id, "state"), marker}
        if state["tail"]:
            keys.add(state["tail"])
        if state["mpu"] or state["sealed"]:
            keys.add(state["sealed"] or data_key)
        self._b.remember_state(self._id, None)
        self._b.delete_many(sorted(keys))

    def rehash(self, staged: Any, algorithm: str) -> str:
        data = getattr(staged, "data", None)
        if data is not None:  # bytes still in memory
            return hashlib.new(algorithm, data).hexdigest()
        hasher = hashlib.new(algorithm)
        with self._b.open(staged.key) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()
