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
  (the last bytes received, fewer than a part; up to 1 MiB of them are kept
  in ``state`` instead) and ``data`` (the multipart upload's target). S3
  parts are at least 5 MiB except the last, so each append fills parts of
  ``part_size`` from the old tail and the body, uploads them, keeps what is
  left as the new tail, and last writes
  ``state`` naming the new parts and tail. That one write, conditional on
  the ETag the state was read with, is the acknowledgement: a replica that
  dies before it leaves the old state, whose tail and parts are intact (new
  parts take numbers the state does not list yet, and are overwritten by the
  next append), and of two appends that read the same state one fails (503,
  the client retries). An append that uploads no part takes no lock: the
  conditional write is all it needs. One that uploads parts, whose numbers
  two writers could both take, holds the session's lock from before its
  first part, and goes on only if the state is still the one it read.
- **Sealing.** While no whole part was uploaded (a monolithic PUT, or small
  chunks), the PUT sends the tail and its own body straight to the digest's
  key, one PutObject or a multipart upload aimed there, completed only once
  the digest matched: no copy, and no lock. Once the blob is there, the PUT
  records the session done with a conditional write of its state, before it
  links the blob: an append that read the state earlier cannot be
  acknowledged after that (its write fails), nor one that reads it later; if
  an append won, the PUT fails (503, the blob stays unlinked) and the
  retried PUT sees the appended bytes. A failed PUT may be retried; a done
  session's retried PUT links the blob already there. Otherwise (parts were
  uploaded) the PUT holds the lock, the tail goes up as the last part, the
  upload is completed into ``data`` and recorded as sealed, and committing
  copies ``data`` to the digest's key (CopyObject, inside the store).
- **Locks** are lease objects under ``locks/``, created with a conditional
  write (``If-None-Match: *``), so exactly one writer creates one. The holder
  renews the lease every third of its life; a lock whose lease ran out (its
  holder died) is taken over by a conditional write on its ETag
  (``If-Match``). Replicas' clocks must agree to within a few seconds.
  Since every write of a session's ``state`` is conditional on the ETag it
  was read with, a holder whose lease was lost (a long pause) cannot
  overwrite another's progress either: its write fails and the client retries.
  The store must honour conditional writes atomically: AWS S3, MinIO, and
  SeaweedFS with one filer do.
- **Layer links read lately.** A replica trusts a layer link it found for
  ``LINK_TTL`` seconds without asking again, so a pull of a blob makes one
  request of the store (the object's) instead of two. A link deleted through
  this replica is forgotten at once; one deleted through another replica (or
  while this one was reading it) may still let this one serve the blob for up
  to ``LINK_TTL`` seconds, never longer (the reference, distribution, keeps
  such answers in memory with no expiry).
  Only found links are kept: a link created anywhere is seen at once.
- **Failures** of the store (unreachable, a timeout, 5xx, a refusal) become
  `errors.Unavailable`. No call retries or waits longer than
  ``storage.s3.timeout``.
- **The collector.** Its fences are `services.storage.redis_fences`, in the
  index's Redis: `touch` records the touch there and then checks that the
  object exists, and every write of a blob or a link is touched first.

This module holds the backend and its calls; `s3_staging` the staged objects and
upload sessions, `s3_leases` the locks, `s3_io` the translation of the store's
answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import msgpack
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.storage.backends.base import ObjectInfo
from services.storage.backends.s3_io import (
    MISSING,
    PRECONDITION,
    RETRY_AFTER,
    BodyReader,
    NotFound,
    PreconditionFailed,
    log,
)
from services.storage.backends.s3_leases import Leases
from services.storage.backends.s3_staging import (
    BytesStaged,
    MultipartStaged,
    S3Session,
    new_state,
)
from services.storage.bodies import cleanup, read_into
from services.storage.paths import Keys
from shared import errors

# Seconds a presigned URL of a redirect is valid.
URL_LIFETIME = 1200
# Seconds a presigned URL handed to the router is valid: it is fetched at once, and
# the margin covers clocks that disagree with the store's by a few minutes.
FETCH_LIFETIME = 300
# Builds the fences, given the backend's batch delete and its epoch listener.
FencesFactory = Callable[[Callable[[list[str]], None], Callable[[int], None]], Any]
# Blob sizes each replica remembers (`S3Backend.stat`): about 200 bytes each.
BLOB_STATS = 100_000
# Seconds a replica trusts a layer link it found, and how many it keeps (module rules).
LINK_TTL = 5.0
LINK_ENTRIES = 100_000
# Upload states each replica keeps (`S3Backend.load_state`): up to about 1 MiB each.
SESSION_STATES = 64
# Objects up to this size are copied by one CopyObject; larger ones part by part
# (UploadPartCopy of COPY_PART bytes each, then one CompleteMultipartUpload, atomic
# as the CopyObject is), so that no single call to the store has to outlast
# `timeout` however large the layer (S3's own CopyObject limit is 5 GiB).
COPY_WHOLE = 256 * 1024 ** 2
COPY_PART = 64 * 1024 ** 2


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


class Unfenced:
    """The fences of a backend built without the index's Redis (tools and tests that
    drive the backend alone): writers need none while no collection can run, and
    a collection refuses to."""

    def touch(self, key: str) -> None:
        pass

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def blob(self, digest: Any, *, exclusive: bool = False) -> Iterator[None]:
        yield

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise errors.Unavailable("garbage collection on S3 needs the index's Redis "
                                 "(docs/object-storage.md)")

    barrier = collecting = claim = delete_claimed = remove_all_if_untouched = _refuse
    prune = _refuse


class S3Backend:
    kind = "s3"

    def __init__(self, cfg: dict[str, Any], scratch: Path,
                 fences: FencesFactory | None = None) -> None:
        self.bucket = cfg["bucket"]
        self.prefix = cfg["prefix"]
        self.part_size = cfg["part_size"]
        self.timeout = float(cfg["timeout"])
        self.redirect = cfg["redirect"]
        self.create_bucket = cfg["create_bucket"]
        self.scratch = scratch
        self._leases = Leases(self)
        # A blob is never rewritten: once seen, its size holds until a collection
        # deletes it, and a pull saves a HEAD. Oldest first out. The collector's
        # epoch (`redis_fences`, rule 3) says when to forget: each answer is kept
        # only if no epoch was seen while it was asked.
        self._blob_stats: dict[str, ObjectInfo] = {}
        self._blob_stats_lock = threading.Lock()
        self._epoch = -1
        self.fences: Any = (fences(self.delete_many, self.saw_epoch) if fences
                            else Unfenced())
        # Layer link key -> time.monotonic() until which it is trusted.
        self._links: dict[str, float] = {}
        # Upload id -> the state this replica read or wrote last, and its ETag.
        self._states: dict[str, tuple[dict[str, Any], str]] = {}
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
        self._copy_config = TransferConfig(multipart_threshold=COPY_WHOLE,
                                           multipart_chunksize=max(self.part_size, COPY_PART))
        if self.create_bucket:
            try:
                self._ensure_bucket()
            except errors.Unavailable as e:
                log.warning("object store: cannot create bucket %s yet: %s", self.bucket, e)

    # -- calls -----------------------------------------------------------------

    def call(self, operation: str, **kwargs: Any) -> Any:
        """One call to the store, its failures translated (see the module's rules)."""
        if "Key" in kwargs:
            kwargs["Key"] = self.prefix + kwargs["Key"]
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                raise NotFound(kwargs.get("Key", "")) from None
            if code in PRECONDITION:
                raise PreconditionFailed(code) from None
            log.warning("object store: %s failed: %s", operation, e)
            raise errors.Unavailable(f"object store: {code or 'error'}",
                                     retry_after=RETRY_AFTER) from None
        except (BotoCoreError, OSError) as e:
            log.warning("object store: %s failed: %s", operation, e)
            raise errors.Unavailable("object store unreachable",
                                     retry_after=RETRY_AFTER) from None

    def _ensure_bucket(self) -> None:
        try:
            self.call("head_bucket")
        except NotFound:
            with contextlib.suppress(PreconditionFailed):
                self.call("create_bucket")
            log.info("object store: created bucket %s", self.bucket)

    # -- objects -----------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        cached = self._blob_stats.get(key)
        if cached is not None:
            return cached
        epoch = self._epoch
        try:
            head = self.call("head_object", Key=key)
        except NotFound:
            return None
        info = ObjectInfo(key, int(head["ContentLength"]), _ns(head["LastModified"]))
        if key.startswith(Keys.BLOBS):
            with self._blob_stats_lock:
                if self._epoch == epoch:
                    if len(self._blob_stats) >= BLOB_STATS:
                        self._blob_stats.pop(next(iter(self._blob_stats)))
                    self._blob_stats[key] = info
        return info

    def saw_epoch(self, epoch: int) -> None:
        """A touch saw the collector's `epoch`: forget the sizes asked before it.
        Any epoch but the last one seen counts, a lower one too: Redis restored
        from an older state (a failover that lost its last writes) moves it back,
        and the next move is to a value never handed out before (`redis_fences`).
        Touches that return out of order only cost a needless forget."""
        if epoch != self._epoch:
            with self._blob_stats_lock:
                if epoch != self._epoch:
                    self._blob_stats.clear()
                    self._epoch = epoch

    def open(self, key: str, first: int = 0, length: int | None = None) -> BinaryIO:
        if length == 0:
            if self.stat(key) is None:
                raise NotFound(key)
            return io.BytesIO(b"")
        kwargs: dict[str, Any] = {}
        if length is not None:
            kwargs["Range"] = f"bytes={first}-{first + length - 1}"
        elif first:
            kwargs["Range"] = f"bytes={first}-"
        answer = self.call("get_object", Key=key, **kwargs)
        return BodyReader(answer["Body"])

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def put(self, key: str, data: bytes, **conditions: str) -> str:
        self._before_write(key)
        return str(self.call("put_object", Key=key, Body=data, **conditions)["ETag"])

    def _before_write(self, key: str) -> None:
        """A write of a key the collector may delete is touched first (`redis_fences`,
        rule 1): a collection either sees the touch, or its delete comes first."""
        if Keys.collectable(key):
            self.fences.touch(key)

    def stage(self, src: BinaryIO, length: int, hasher: hashlib._Hash | None,
              key_hint: str) -> Any:
        if length <= self.part_size:
            buf = bytearray(length)
            read_into(src, memoryview(buf))
            if hasher is not None:
                hasher.update(buf)
            return BytesStaged(self, bytes(buf))
        key = key_hint or f"tmp/{uuid.uuid4().hex}"
        upload_id = self.call("create_multipart_upload", Key=key)["UploadId"]
        staged = MultipartStaged(self, key, upload_id, length)
        try:
            buf = bytearray(self.part_size)
            view = memoryview(buf)
            remaining = length
            while remaining:
                n = read_into(src, view[:min(remaining, self.part_size)])
                if hasher is not None:
                    hasher.update(view[:n])
                staged.parts.append(self.upload_part(key, upload_id,
                                                      len(staged.parts) + 1, view[:n]))
                remaining -= n
        except BaseException:
            staged.discard()
            raise
        return staged

    def stage_file(self, path: Path, hasher: hashlib._Hash, key_hint: str) -> Any:
        with open(path, "rb") as f:
            return self.stage(f, path.stat().st_size, hasher, key_hint)

    def upload_part(self, key: str, upload_id: str, number: int,
                     data: memoryview) -> dict[str, Any]:
        answer = self.call("upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                            Body=bytes(data))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def complete(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._before_write(key)
        self.call("complete_multipart_upload", Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": parts})

    def copy(self, source: str, target: str, size: int) -> None:
        """Copy inside the store: the bytes never come through this process."""
        self._before_write(target)
        if size <= self._copy_config.multipart_threshold:
            self.call("copy_object", Key=target,
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
            self._links.pop(key, None)
        with contextlib.suppress(NotFound):
            self.call("delete_object", Key=key)
        return True

    def delete_many(self, keys: list[str]) -> None:
        with self._blob_stats_lock:
            for key in keys:
                self._blob_stats.pop(key, None)
                self._links.pop(key, None)
        for i in range(0, len(keys), 1000):
            self.call("delete_objects", Delete={
                "Objects": [{"Key": self.prefix + k} for k in keys[i:i + 1000]],
                "Quiet": True})

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", Prefix=self.prefix + prefix, **token)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][len(self.prefix):], int(item["Size"]),
                                 _ns(item["LastModified"]))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def has_prefix(self, prefix: str) -> bool:
        page = self.call("list_objects_v2", Prefix=self.prefix + prefix, MaxKeys=1)
        return bool(page.get("Contents"))

    def touch(self, key: str) -> bool:
        # Touched first, then asked: once the touch returns, no collection deletes
        # the key, and a size remembered from before a delete was forgotten.
        self.fences.touch(key)
        return self.stat(key) is not None

    def redirect_url(self, key: str) -> str | None:
        return self._presign(key, URL_LIFETIME) if self.redirect else None

    def fetch_url(self, key: str) -> str | None:
        # The router fetches the object itself: the bytes cross one process, not two.
        return self._presign(key, FETCH_LIFETIME)

    def _presign(self, key: str, lifetime: int) -> str:
        try:
            return str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key},
                ExpiresIn=lifetime))
        except BotoCoreError as e:  # no credentials to sign with, say
            log.warning("object store: presigning %s failed: %s", key, e)
            raise errors.Unavailable("object store: cannot presign",
                                     retry_after=RETRY_AFTER) from None

    def local_path(self, key: str) -> Path | None:
        return None

    # -- records -----------------------------------------------------------------

    def set_record(self, key: str, value: str) -> None:
        self.put(key, value.encode())
        if value == "" and "/_layers/" in key:
            self._trust_link(key)

    def get_record(self, key: str) -> str | None:
        layer_link = "/_layers/" in key
        if layer_link and self._links.get(key, 0.0) > time.monotonic():
            return ""
        try:
            value = self.read(key).decode()
        except NotFound:
            return None
        if layer_link and value == "":
            self._trust_link(key)
        return value

    def _trust_link(self, key: str) -> None:
        with self._blob_stats_lock:
            if len(self._links) >= LINK_ENTRIES:
                self._links.pop(next(iter(self._links)))
            self._links.pop(key, None)  # re-inserted last: the oldest go first
            self._links[key] = time.monotonic() + LINK_TTL

    # -- upload sessions ---------------------------------------------------------

    def create_session(self, upload_id: str, info: bytes) -> None:
        # One object, one write: the description travels in the state.
        self.put(Keys.upload(upload_id, "state"), msgpack.packb(new_state(info)))

    def session_info(self, upload_id: str) -> bytes | None:
        try:
            state, _ = self.load_state(upload_id)
        except NotFound:
            return None
        info = state.get("info")
        return info if isinstance(info, bytes) else None

    def session_size(self, upload_id: str) -> int | None:
        try:
            state, _ = self.load_state(upload_id)
        except NotFound:
            return None
        return int(state["size"])

    def load_state(self, upload_id: str) -> tuple[dict[str, Any], str]:
        """The session's state and its ETag. One this replica read or wrote last is
        not read again when a HEAD finds the same ETag (the same bytes): a session of
        small chunks carries up to 1 MiB of tail in its state."""
        key = Keys.upload(upload_id, "state")
        known = self._states.get(upload_id)
        if known is not None and str(self.call("head_object", Key=key)["ETag"]) == known[1]:
            return known
        answer = self.call("get_object", Key=key)
        with contextlib.closing(BodyReader(answer["Body"])) as body:
            raw = io.BufferedReader(body).read()
        state, etag = msgpack.unpackb(raw), str(answer["ETag"])
        self.remember_state(upload_id, state, etag)
        return state, etag

    def remember_state(self, upload_id: str, state: dict[str, Any] | None, etag: str = ""
                       ) -> None:
        """Keep (or with None, forget) the state this replica read or wrote; callers
        never change a state in place, they write a new one."""
        with self._blob_stats_lock:
            self._states.pop(upload_id, None)
            if state is None:
                return
            if len(self._states) >= SESSION_STATES:
                self._states.pop(next(iter(self._states)))
            self._states[upload_id] = (state, etag)

    @contextlib.contextmanager
    def session(self, upload_id: str, adding: int = 0) -> Iterator[S3Session]:
        # The lock is taken only where parts are uploaded (`S3Session.lock`): before
        # the state is read when what is added fills a part by itself.
        with contextlib.ExitStack() as held:
            locked = adding >= self.part_size
            if locked:
                held.enter_context(self.lock(Keys.upload_lock(upload_id)))
            state, etag = self.load_state(upload_id)
            yield S3Session(self, upload_id, state, etag, held, locked)

    def remove_session(self, upload_id: str) -> None:
        self.remember_state(upload_id, None)
        with contextlib.suppress(NotFound):
            state, _ = self.load_state(upload_id)
            if state.get("mpu") and not state.get("sealed"):
                with contextlib.suppress(NotFound):
                    self.call("abort_multipart_upload", Key=Keys.upload(upload_id, "data"),
                               UploadId=state["mpu"])
        self.delete_many([o.key for o in self.list(Keys.upload(upload_id))])

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
            page = self.call("list_multipart_uploads", Prefix=self.prefix, **marker)
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() > cutoff:
                    continue
                key = upload["Key"][len(self.prefix):]
                # Only this registry's keys: a bucket may be shared with other
                # prefixes (``reg`` lists ``reg2/...`` too) or other tools.
                if not key.startswith((Keys.UPLOADS, Keys.BLOBS)) \
                        or self._session_names(key, upload["UploadId"]):
                    continue
                with contextlib.suppress(NotFound):
                    self.call("abort_multipart_upload", Key=key, UploadId=upload["UploadId"])
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
            state, _ = self.load_state(rest[:-len("/data")])
        except NotFound:
            return False
        return bool(state.get("mpu") == mpu)

    # -- coordination --------------------------------------------------------------

    def lock(self, key: str) -> AbstractContextManager[None]:
        return self._leases.hold(key)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"object_store": self.client.meta.endpoint_url,
                                  "bucket": self.bucket}
        try:
            if self.create_bucket:
                self._ensure_bucket()
            else:
                self.call("head_bucket")
            ok = True
        except (NotFound, errors.Unavailable) as e:
            detail["object_store_error"] = ("bucket missing" if isinstance(e, NotFound)
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
        reachable = getattr(self.fences, "reachable", None)
        if reachable is not None:
            # Reported, not required: pulls need no fences, and a replica taken out
            # of rotation would not make Redis come back sooner.
            detail["collector_fences_reachable"] = reachable()
        return ok and scratch, detail
