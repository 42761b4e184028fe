"""The S3 backend: every key is the object ``<prefix><key>`` of one bucket.

Every storage replica that names the same bucket and prefix shares
everything in it: blobs, links and upload sessions, so two replicas behave
as one. ``storage.root`` holds only per-replica scratch (spooled bodies).
The client is boto3, the library AWS maintains and the one S3-compatible
stores (SeaweedFS, MinIO, Ceph RGW) test against; it is imported only when
``storage.backend`` is ``s3``.

How each rule of `backends.base` holds here:

- **Nothing partial is visible.** A blob appears under its digest key by
  one PutObject, one CompleteMultipartUpload or one CopyObject, each atomic
  in S3, and only after its digest was verified: a body larger than a part
  goes up as a multipart upload aimed at its key, invisible until completed,
  aborted when the digest is wrong.
- **Records** are small objects whose body is the value (a manifest link's
  media type); empty for layer links and upload markers.
- **Sessions.** An upload session is the objects under ``uploads/<id>/``:
  ``state`` (msgpack: the session's description, its size, the multipart
  upload's id and its parts, the tail, whether sealed), ``tail-<random>``
  (the last bytes received, fewer than a part) and ``data`` (the multipart
  upload's target). S3 parts are at least 5 MiB except the last, so each
  append fills parts of ``part_size`` from the old tail and the body,
  uploads them, writes what is left as a new tail object, and last writes
  ``state`` naming the new parts and tail. That one write is the
  acknowledgement: a replica that dies before it leaves the old state, whose
  tail and parts are intact (new parts take numbers the state does not list
  yet, and are overwritten by the next append).
- **Sealing.** While no whole part was uploaded (a monolithic PUT, or small
  chunks), the PUT sends the tail and its own body straight to the digest's
  key, one PutObject or a multipart upload aimed there, completed only once
  the digest matched: no copy, and the state is not written, so a failed PUT
  may be retried. Otherwise the tail goes up as the last part, the upload is
  completed into ``data``, and committing copies ``data`` to the digest's key
  (CopyObject, inside the store).
- **Locks** are lease objects under ``locks/``, created with a conditional
  write (``If-None-Match: *``), so exactly one writer creates one. The holder
  renews the lease every third of its life; a lock whose lease ran out (its
  holder died) is taken over by a conditional write on its ETag
  (``If-Match``). Replicas' clocks must agree to within a few seconds. Each
  session's ``state`` is also written with ``If-Match`` on the ETag it was
  read with, so a holder whose lease was lost (a long pause) cannot
  overwrite another's progress: its write fails and the client retries.
  The store must honour conditional writes atomically: AWS S3, MinIO, and
  SeaweedFS with one filer do.
- **Failures** of the store (unreachable, a timeout, 5xx, a refusal) become
  `errors.Unavailable`. No call retries or waits longer than
  ``storage.s3.timeout``.
- **The collector.** There is no garbage collection on S3: `touch` only
  checks that an object exists, and the fences are no-ops (`_NoCollector`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import msgpack
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.storage.backends.base import ObjectInfo
from services.storage.bodies import CHUNK, Body, cleanup, read_into
from services.storage.paths import Keys
from shared import errors

log = logging.getLogger("dockyard.storage.s3")

# Seconds a lock's lease lasts without renewal: how long a dead holder on another
# machine blocks others. Shorter than the default timeout, so a waiter outlasts it.
LEASE = 8.0
# Who holds a lease: a holder on this machine whose process is gone is dead at once.
_HOST = socket.gethostname()
# Seconds a presigned URL of a redirect is valid.
URL_LIFETIME = 1200
# Blob sizes each replica remembers (`S3Backend.stat`): about 200 bytes each.
BLOB_STATS = 100_000
# CopyObject copies at most 5 GiB; larger objects are copied part by part.
COPY_LIMIT = 5 * 1024 ** 3
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
RETRY_AFTER = 2


class _NotFound(FileNotFoundError):
    pass


class _Precondition(Exception):
    pass


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


class _NoCollector:
    """No garbage collection runs on S3, so there is nothing to fence."""

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def blob(self, digest: Any, *, exclusive: bool = False) -> Iterator[None]:
        yield


class _Reader(io.RawIOBase):
    """An object's body whose read errors are the store's, as `errors.Unavailable`."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (BotoCoreError, OSError) as e:
            log.warning("object store: reading failed: %s", e)
            raise errors.Unavailable("object store read failed", retry_after=RETRY_AFTER
                                     ) from None
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class S3Backend:
    kind = "s3"

    def __init__(self, cfg: dict[str, Any], scratch: Path) -> None:
        self.bucket = cfg["bucket"]
        self.prefix = cfg["prefix"]
        self.part_size = cfg["part_size"]
        self.timeout = float(cfg["timeout"])
        self.redirect = cfg["redirect"]
        self.create_bucket = cfg["create_bucket"]
        self.scratch = scratch
        self.fences = _NoCollector()
        # A blob is never rewritten, and on S3 never deleted (no collection runs):
        # once seen, its size holds for good, and a pull saves a HEAD. Oldest first out.
        self._blob_stats: dict[str, ObjectInfo] = {}
        self._blob_stats_lock = threading.Lock()
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=cfg["endpoint"] or None,
            region_name=cfg["region"],
            aws_access_key_id=cfg["access_key"] or None,
            aws_secret_access_key=cfg["secret_key"] or None,
            verify=cfg["verify_tls"],
            config=Config(
                s3={"addressing_style": "path" if cfg["path_style"] else "virtual"},
                signature_version="s3v4",
                connect_timeout=self.timeout, read_timeout=self.timeout,
                # One attempt: the client retries on 503, and no call outlasts the timeout.
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=64,
                # Checksums of every part cost a pass over the bytes; S3's own
                # Content-MD5-free signing (v4) already covers integrity in transit
                # together with the digest dockyard verifies.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._copy_config = TransferConfig(multipart_threshold=COPY_LIMIT,
                                           multipart_chunksize=max(self.part_size, 64 << 20))
        if self.create_bucket:
            try:
                self._ensure_bucket()
            except errors.Unavailable as e:
                log.warning("object store: cannot create bucket %s yet: %s", self.bucket, e)

    # -- calls -----------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One call to the store, its failures translated (see the module's rules)."""
        if "Key" in kwargs:
            kwargs["Key"] = self.prefix + kwargs["Key"]
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _NotFound(kwargs.get("Key", "")) from None
            if code in _PRECONDITION:
                raise _Precondition(code) from None
            log.warning("object store: %s failed: %s", operation, e)
            raise errors.Unavailable(f"object store: {code or 'error'}",
                                     retry_after=RETRY_AFTER) from None
        except (BotoCoreError, OSError) as e:
            log.warning("object store: %s failed: %s", operation, e)
            raise errors.Unavailable("object store unreachable",
                                     retry_after=RETRY_AFTER) from None

    def _ensure_bucket(self) -> None:
        try:
            self._call("head_bucket")
        except _NotFound:
            with contextlib.suppress(_Precondition):
                self._call("create_bucket")
            log.info("object store: created bucket %s", self.bucket)

    # -- objects -----------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        cached = self._blob_stats.get(key)
        if cached is not None:
            return cached
        try:
            head = self._call("head_object", Key=key)
        except _NotFound:
            return None
        info = ObjectInfo(key, int(head["ContentLength"]), _ns(head["LastModified"]))
        if key.startswith(Keys.BLOBS):
            with self._blob_stats_lock:
                if len(self._blob_stats) >= BLOB_STATS:
                    self._blob_stats.pop(next(iter(self._blob_stats)))
                self._blob_stats[key] = info
        return info

    def open(self, key: str, first: int = 0, length: int | None = None) -> BinaryIO:
        if length == 0:
            if self.stat(key) is None:
                raise _NotFound(key)
            return io.BytesIO(b"")
        kwargs: dict[str, Any] = {}
        if length is not None:
            kwargs["Range"] = f"bytes={first}-{first + length - 1}"
        elif first:
            kwargs["Range"] = f"bytes={first}-"
        answer = self._call("get_object", Key=key, **kwargs)
        return io.BufferedReader(_Reader(answer["Body"]), CHUNK)

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def put(self, key: str, data: bytes, **conditions: str) -> str:
        return str(self._call("put_object", Key=key, Body=data, **conditions)["ETag"])

    def stage(self, src: BinaryIO, length: int, hasher: hashlib._Hash | None,
              key_hint: str) -> Any:
        if length <= self.part_size:
            buf = bytearray(length)
            read_into(src, memoryview(buf))
            if hasher is not None:
                hasher.update(buf)
            return _BytesStaged(self, bytes(buf))
        key = key_hint or f"tmp/{uuid.uuid4().hex}"
        upload_id = self._call("create_multipart_upload", Key=key)["UploadId"]
        staged = _MultipartStaged(self, key, upload_id, length)
        try:
            buf = bytearray(self.part_size)
            view = memoryview(buf)
            remaining = length
            while remaining:
                n = read_into(src, view[:min(remaining, self.part_size)])
                if hasher is not None:
                    hasher.update(view[:n])
                staged.parts.append(self._upload_part(key, upload_id,
                                                      len(staged.parts) + 1, view[:n]))
                remaining -= n
        except BaseException:
            staged.discard()
            raise
        return staged

    def stage_file(self, path: Path, hasher: hashlib._Hash, key_hint: str) -> Any:
        with open(path, "rb") as f:
            return self.stage(f, path.stat().st_size, hasher, key_hint)

    def _upload_part(self, key: str, upload_id: str, number: int,
                     data: memoryview) -> dict[str, Any]:
        answer = self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                            Body=bytes(data))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": parts})

    def copy(self, source: str, target: str, size: int) -> None:
        """Copy inside the store: the bytes never come through this process."""
        if size < COPY_LIMIT:
            self._call("copy_object", Key=target,
                       CopySource={"Bucket": self.bucket, "Key": self.prefix + source})
            return
        try:
            self.client.copy({"Bucket": self.bucket, "Key": self.prefix + source},
                             self.bucket, self.prefix + target, Config=self._copy_config)
        except (ClientError, BotoCoreError, OSError) as e:
            log.warning("object store: copy failed: %s", e)
            raise errors.Unavailable("object store: copy failed",
                                     retry_after=RETRY_AFTER) from None

    def delete(self, key: str) -> bool:
        # S3's DELETE does not say whether the key was there (`base.Backend.delete`).
        with self._blob_stats_lock:
            self._blob_stats.pop(key, None)
        with contextlib.suppress(_NotFound):
            self._call("delete_object", Key=key)
        return True

    def _delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            self._call("delete_objects", Delete={
                "Objects": [{"Key": self.prefix + k} for k in keys[i:i + 1000]],
                "Quiet": True})

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=self.prefix + prefix, **token)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][len(self.prefix):], int(item["Size"]),
                                 _ns(item["LastModified"]))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def has_prefix(self, prefix: str) -> bool:
        page = self._call("list_objects_v2", Prefix=self.prefix + prefix, MaxKeys=1)
        return bool(page.get("Contents"))

    def touch(self, key: str) -> bool:
        # No collector reads an object's age on S3 (see the module's rules).
        return self.stat(key) is not None

    def redirect_url(self, key: str) -> str | None:
        if not self.redirect:
            return None
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key},
            ExpiresIn=URL_LIFETIME))

    def local_path(self, key: str) -> Path | None:
        return None

    # -- records -----------------------------------------------------------------

    def set_record(self, key: str, value: str) -> None:
        self.put(key, value.encode())

    def get_record(self, key: str) -> str | None:
        try:
            return self.read(key).decode()
        except _NotFound:
            return None

    # -- upload sessions ---------------------------------------------------------

    def create_session(self, upload_id: str, info: bytes) -> None:
        # One object, one write: the description travels in the state.
        self.put(Keys.upload(upload_id, "state"), msgpack.packb(_new_state(info)))

    def session_info(self, upload_id: str) -> bytes | None:
        try:
            state, _ = self._load_state(upload_id)
        except _NotFound:
            return None
        info = state.get("info")
        return info if isinstance(info, bytes) else None

    def session_size(self, upload_id: str) -> int | None:
        try:
            state, _ = self._load_state(upload_id)
        except _NotFound:
            return None
        return int(state["size"])

    def _load_state(self, upload_id: str) -> tuple[dict[str, Any], str]:
        answer = self._call("get_object", Key=Keys.upload(upload_id, "state"))
        with contextlib.closing(_Reader(answer["Body"])) as body:
            raw = io.BufferedReader(body).read()
        return msgpack.unpackb(raw), str(answer["ETag"])

    @contextlib.contextmanager
    def session(self, upload_id: str) -> Iterator[_S3Session]:
        with self.lock(Keys.upload_lock(upload_id)):
            state, etag = self._load_state(upload_id)
            yield _S3Session(self, upload_id, state, etag)

    def remove_session(self, upload_id: str) -> None:
        with contextlib.suppress(_NotFound):
            state, _ = self._load_state(upload_id)
            if state.get("mpu") and not state.get("sealed"):
                with contextlib.suppress(_NotFound):
                    self._call("abort_multipart_upload", Key=Keys.upload(upload_id, "data"),
                               UploadId=state["mpu"])
        self._delete_many([o.key for o in self.list(Keys.upload(upload_id))])

    def sessions(self) -> Iterator[tuple[str, float]]:
        newest: dict[str, int] = {}
        for info in self.list(Keys.UPLOADS):
            upload_id = info.key[len(Keys.UPLOADS):].partition("/")[0]
            newest[upload_id] = max(newest.get(upload_id, 0), info.mtime_ns)
        for upload_id, mtime in newest.items():
            yield upload_id, mtime / 1e9

    def purge_orphans(self, max_age: float) -> int:
        """Abort multipart uploads older than `max_age` that no session names: a
        replica died between starting one and recording it, or mid-way through a
        body uploaded in one request."""
        cutoff = time.time() - max_age
        aborted = 0
        marker: dict[str, str] = {}
        while True:
            page = self._call("list_multipart_uploads", Prefix=self.prefix, **marker)
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() > cutoff:
                    continue
                key = upload["Key"][len(self.prefix):]
                if self._session_names(key, upload["UploadId"]):
                    continue
                with contextlib.suppress(_NotFound):
                    self._call("abort_multipart_upload", Key=key, UploadId=upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            marker = {"KeyMarker": page["NextKeyMarker"],
                      "UploadIdMarker": page["NextUploadIdMarker"]}

    def _session_names(self, key: str, mpu: str) -> bool:
        head, _, rest = key.partition(Keys.UPLOADS)
        if head or not rest.endswith("/data"):
            return False
        try:
            state, _ = self._load_state(rest[:-len("/data")])
        except _NotFound:
            return False
        return bool(state.get("mpu") == mpu)

    # -- coordination --------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        token = uuid.uuid4().hex
        held = [self._acquire(key, token)]
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(key, token, held, stop),
                                   name="s3-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                self._call("delete_object", Key=key, IfMatch=held[0])
            except (_NotFound, _Precondition):
                log.warning("object store: lock %s was taken over before its release", key)
            except errors.Unavailable:
                pass    # its lease runs out

    def _lease(self, token: str) -> bytes:
        return msgpack.packb({"token": token, "expires": time.time() + LEASE,
                              "host": _HOST, "pid": os.getpid()})

    def _acquire(self, key: str, token: str) -> str:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return self.put(key, self._lease(token), IfNoneMatch="*")
            except _Precondition:
                pass
            # Held: take it over when its holder stopped renewing it.
            try:
                answer = self._call("get_object", Key=key)
                with contextlib.closing(_Reader(answer["Body"])) as body:
                    lease = msgpack.unpackb(io.BufferedReader(body).read())
                if float(lease["expires"]) < time.time() or _died_here(lease):
                    return self.put(key, self._lease(token), IfMatch=str(answer["ETag"]))
            except (_NotFound, _Precondition):
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("object store: lock %s holds no lease; replacing it", key)
                with contextlib.suppress(_NotFound):
                    self._call("delete_object", Key=key)
                continue
            if time.monotonic() + delay > deadline:
                raise errors.Unavailable("busy: another request holds this upload or "
                                         "manifest; retry", retry_after=1)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _renew(self, key: str, token: str, held: list[str], stop: threading.Event) -> None:
        while not stop.wait(LEASE / 3):
            try:
                held[0] = self.put(key, self._lease(token), IfMatch=held[0])
            except (_NotFound, _Precondition):
                log.error("object store: lost lock %s", key)
                return
            except errors.Unavailable:
                continue

    def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"object_store": self.client.meta.endpoint_url,
                                  "bucket": self.bucket}
        try:
            if self.create_bucket:
                self._ensure_bucket()
            else:
                self._call("head_bucket")
            ok = True
        except (_NotFound, errors.Unavailable) as e:
            detail["object_store_error"] = ("bucket missing" if isinstance(e, _NotFound)
                                            else str(e))
            ok = False
        detail["object_store_reachable"] = ok
        probe = self.scratch / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            scratch = True
        except OSError:
            scratch = False
        finally:
            cleanup(probe)
        detail["storage_root_writable"] = scratch
        return ok and scratch, detail


def _died_here(lease: dict[str, Any]) -> bool:
    """Whether the lease's holder was a process of this machine that is gone (a
    storage process killed and restarted): its lock need not wait out the lease.
    A reused pid reads as alive, which only means waiting for the lease."""
    if lease.get("host") != _HOST or not isinstance(lease.get("pid"), int):
        return False
    if lease["pid"] == os.getpid():
        return False
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _new_state(info: bytes) -> dict[str, Any]:
    return {"info": info, "size": 0, "mpu": None, "parts": [], "tail": None, "sealed": None}


class _BytesStaged:
    """A body of at most one part, held in memory until its digest is verified."""

    def __init__(self, backend: S3Backend, data: bytes) -> None:
        self._backend = backend
        self.data = data
        self.size = len(data)

    def commit(self, key: str) -> None:
        self._backend.put(key, self.data)

    def discard(self) -> None:
        self.data = b""


class _Chain(io.RawIOBase):
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


class _MultipartStaged:
    """A multipart upload aimed at `key`, all parts up: invisible until completed."""

    def __init__(self, backend: S3Backend, key: str, upload_id: str, size: int) -> None:
        self._backend = backend
        self.key = key
        self.upload_id = upload_id
        self.size = size
        self.parts: list[dict[str, Any]] = []

    def commit(self, key: str) -> None:
        self._backend._complete(self.key, self.upload_id, self.parts)
        if key != self.key:
            self._backend.copy(self.key, key, self.size)
            self._backend.delete(self.key)

    def discard(self) -> None:
        with contextlib.suppress(_NotFound, errors.Unavailable):
            self._backend._call("abort_multipart_upload", Key=self.key,
                                UploadId=self.upload_id)


class _ObjectStaged:
    """A sealed session's bytes, the object `key`; committing copies them."""

    def __init__(self, backend: S3Backend, key: str, size: int) -> None:
        self._backend = backend
        self.key = key
        self.size = size

    def commit(self, key: str) -> None:
        self._backend.copy(self.key, key, self.size)

    def discard(self) -> None:
        """The session's removal deletes the object with the rest of the session."""


class _S3Session:
    """An upload session held under its lock (see the module's rules)."""

    def __init__(self, backend: S3Backend, upload_id: str, state: dict[str, Any],
                 etag: str) -> None:
        self._b = backend
        self._id = upload_id
        self._state = state
        self._etag = etag
        self.size = int(state["size"])
        info = state.get("info")
        self.info = info if isinstance(info, bytes) else None

    def _save(self, state: dict[str, Any]) -> None:
        try:
            self._etag = self._b.put(Keys.upload(self._id, "state"), msgpack.packb(state),
                                     IfMatch=self._etag)
        except _Precondition:
            raise errors.Unavailable("upload busy; retry", retry_after=1) from None
        self._state = state
        self.size = int(state["size"])

    def append(self, body: Body, hasher: hashlib._Hash | None) -> int:
        state = dict(self._state)
        if state["sealed"]:
            raise errors.BlobUploadInvalid(detail={
                "reason": "the upload is complete; finish it with a PUT without a body"})
        b = self._b
        parts = [dict(p) for p in state["parts"]]
        tail = b.read(state["tail"]) if state["tail"] else b""
        # A part at most: what is left of the body after it fills one goes in the next.
        buf = bytearray(min(b.part_size, len(tail) + body.length))
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
                n = read_into(src, view[filled:filled + min(remaining, b.part_size - filled)])
                if hasher is not None:
                    hasher.update(view[filled:filled + n])
                filled += n
                remaining -= n
                if filled == b.part_size:
                    if state["mpu"] is None:
                        state["mpu"] = created = b._call("create_multipart_upload",
                                                         Key=data_key)["UploadId"]
                    parts.append(b._upload_part(data_key, state["mpu"], len(parts) + 1,
                                                view[:filled]))
                    filled = 0
            tail_key = Keys.upload(self._id, f"tail-{uuid.uuid4().hex}") if filled else None
            if tail_key:
                b.put(tail_key, bytes(view[:filled]))
            saving = True
            self._save({**state, "parts": parts, "tail": tail_key,
                        "size": self.size + body.length})
        except BaseException:
            # A state write that timed out may have landed: then what it names stays.
            if created is not None and not saving:
                with contextlib.suppress(Exception):
                    b._call("abort_multipart_upload", Key=data_key, UploadId=created)
            raise
        finally:
            if body.path is not None:
                src.close()
        if state["tail"]:
            # The tail the new state replaced; a leftover goes with the session.
            with contextlib.suppress(Exception):
                b._call("delete_object", Key=state["tail"])
        return self.size

    def seal(self, body: Body, hasher: hashlib._Hash | None, key_hint: str) -> Any:
        """With no whole part uploaded yet, the tail and the last chunk go straight to
        `key_hint` (one PutObject, or a multipart upload aimed there): no copy, and
        the session's state is not written. Otherwise the chunk is appended, and the
        multipart upload completed into ``data`` to be copied."""
        state = self._state
        b = self._b
        if not state["sealed"] and state["mpu"] is None:
            tail = b.read(state["tail"]) if state["tail"] else b""
            total = len(tail) + body.length
            if hasher is not None or total <= b.part_size:
                src = body.open()
                try:
                    reader = io.BufferedReader(_Chain(tail, src, hasher), CHUNK)
                    return b.stage(reader, total, None, key_hint)
                finally:
                    if body.path is not None:
                        src.close()
        if body.length:
            self.append(body, hasher)
        return self._seal_parts()

    def _seal_parts(self) -> _ObjectStaged:
        state = dict(self._state)
        if state["sealed"]:
            return _ObjectStaged(self._b, state["sealed"], self.size)
        b = self._b
        data_key = Keys.upload(self._id, "data")
        if state["mpu"]:
            parts = [dict(p) for p in state["parts"]]
            try:
                if state["tail"]:
                    parts.append(b._upload_part(data_key, state["mpu"], len(parts) + 1,
                                                memoryview(b.read(state["tail"]))))
                b._complete(data_key, state["mpu"], parts)
            except _NotFound:
                # Completed by an earlier PUT that failed before it recorded so.
                done = b.stat(data_key)
                if done is None or done.size != self.size:
                    raise
            sealed = data_key
        elif state["tail"]:
            sealed = state["tail"]
        else:
            b.put(data_key, b"")
            sealed = data_key
        self._save({**state, "sealed": sealed})
        return _ObjectStaged(b, sealed, self.size)

    def rehash(self, staged: Any, algorithm: str) -> str:
        if isinstance(staged, _BytesStaged):
            return hashlib.new(algorithm, staged.data).hexdigest()
        hasher = hashlib.new(algorithm)
        with self._b.open(staged.key) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()
