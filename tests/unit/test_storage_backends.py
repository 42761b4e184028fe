"""One suite for every storage backend (`services.storage.backends`): the filesystem
on a real directory, and S3 on a real SeaweedFS (`tests/support/seaweedfs.py`).

Each test states a rule of `backends.base` and checks it the same way on both;
the few that only one backend has (a multipart upload to abort, a presigned URL)
say so in their name. Two backend objects on one directory or one bucket stand
for two storage replicas.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.storage.backends.base import Backend
from services.storage.backends.filesystem import FilesystemBackend
from services.storage.blobstore import BlobStore
from services.storage.bodies import Body
from services.storage.paths import Keys, Layout
from services.storage.uploads import UploadStore
from shared import errors
from shared.validation import Digest

MIB = 1024 * 1024
PART = 5 * MIB


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def body(data: bytes) -> Body:
    return Body(len(data), stream=io.BytesIO(data))


@pytest.fixture(params=["filesystem", "s3"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A factory: each call is another replica on the same directory or bucket."""
    layout = Layout(tmp_path / "root")
    layout.create()
    if request.param == "filesystem":
        return lambda: FilesystemBackend(layout)
    from tests.support.seaweedfs import require

    require()
    from services.storage.backends.s3 import S3Backend

    access = request.getfixturevalue("seaweedfs").access
    bucket = request.getfixturevalue("s3_bucket")
    cfg = {**access.storage_config(bucket, "registry/"), "part_size": PART, "timeout": 10.0,
           "redirect": False, "verify_tls": True}
    return lambda: S3Backend(cfg, scratch=layout.tmp)


@pytest.fixture
def backend(make_backend: Callable[[], Backend]) -> Backend:
    return make_backend()


# -- objects ----------------------------------------------------------------------


def test_put_stat_read_delete(backend: Backend) -> None:
    key = "blobs/sha256/ab/abc"
    assert backend.stat(key) is None
    backend.put(key, b"hello world")
    info = backend.stat(key)
    assert info is not None and info.size == 11 and info.key == key
    assert abs(info.mtime_ns / 1e9 - time.time()) < 60
    assert backend.read(key) == b"hello world"
    with backend.open(key, 6) as f:
        assert f.read() == b"world"
    with backend.open(key, 2, 3) as f:
        assert f.read() == b"llo"
    backend.put(key, b"replaced")
    assert backend.read(key) == b"replaced"
    assert backend.delete(key) is True
    # Deleting what is gone is no error; only a filesystem can say it was gone.
    assert backend.delete(key) is (backend.kind != "filesystem")
    assert backend.stat(key) is None
    with pytest.raises(FileNotFoundError):
        backend.read(key)
    with pytest.raises(FileNotFoundError):
        backend.open(key)


def test_list_and_prefixes(backend: Backend) -> None:
    for key in ("repositories/a/b/_layers/sha256/1", "repositories/a/b/_layers/sha256/2",
                "repositories/a/c/_layers/sha256/3"):
        backend.set_record(key, "")
    found = sorted(o.key for o in backend.list("repositories/a/b/"))
    assert found == ["repositories/a/b/_layers/sha256/1", "repositories/a/b/_layers/sha256/2"]
    assert backend.has_prefix("repositories/a/c/")
    assert not backend.has_prefix("repositories/a/d/")
    assert list(backend.list("repositories/none/")) == []


def test_records_hold_a_value_or_none(backend: Backend) -> None:
    key = "repositories/r/_manifests/sha256/abc"
    assert backend.get_record(key) is None
    backend.set_record(key, "application/vnd.oci.image.manifest.v1+json")
    assert backend.get_record(key) == "application/vnd.oci.image.manifest.v1+json"
    backend.set_record(key, "application/vnd.oci.image.index.v1+json")
    assert backend.get_record(key) == "application/vnd.oci.image.index.v1+json"
    backend.set_record("repositories/r/_layers/sha256/abc", "")
    assert backend.get_record("repositories/r/_layers/sha256/abc") == ""
    assert backend.touch(key) and not backend.touch("repositories/r/_layers/sha256/none")


# -- staged writes: nothing partial is visible ---------------------------------------


@pytest.mark.parametrize("size", [0, 1000, PART + PART // 2])
def test_staged_bytes_appear_only_when_committed(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    key = Keys.blob(digest_of(data))
    hasher = hashlib.sha256()
    staged = backend.stage(io.BytesIO(data), size, hasher, key)
    assert hasher.hexdigest() == digest_of(data).hex
    assert backend.stat(key) is None
    staged.commit(key)
    assert backend.read(key) == data


def test_discarded_stage_leaves_nothing(backend: Backend) -> None:
    data = os.urandom(PART + 10)
    key = Keys.blob(digest_of(data))
    staged = backend.stage(io.BytesIO(data), len(data), None, key)
    staged.discard()
    assert backend.stat(key) is None
    assert [o for o in backend.list("") if not o.key.startswith("locks/")] == []


def test_a_short_body_is_refused_and_leaves_nothing(backend: Backend) -> None:
    data = os.urandom(PART + 10)
    key = Keys.blob(digest_of(data))
    with pytest.raises(errors.SizeInvalid):
        backend.stage(io.BytesIO(data[:-1]), len(data), None, key)
    assert backend.stat(key) is None


def test_blob_store_verifies_before_anything_is_visible(backend: Backend,
                                                        tmp_path: Path) -> None:
    blobs = BlobStore(Layout(tmp_path / "root"), backend)
    data = os.urandom(PART + 100)
    wrong = digest_of(b"something else")
    with pytest.raises(errors.DigestInvalid):
        blobs.ingest(io.BytesIO(data), len(data), wrong)
    assert blobs.size(wrong) is None
    d = blobs.ingest(io.BytesIO(data), len(data), digest_of(data))
    assert blobs.read(d) == data
    blobs.link_layer("a/b", d)
    assert blobs.has_layer("a/b", d) and not blobs.has_layer("a/c", d)
    assert blobs.mount("a/b", "a/c", d) and blobs.has_layer("a/c", d)
    assert blobs.repository_exists("a/c") and not blobs.repository_exists("a/x")
    assert blobs.link_manifest("a/b", d, "text/x") is True
    assert blobs.link_manifest("a/b", d, "text/x") is False
    assert blobs.manifest_media_type("a/b", d) == "text/x"
    assert blobs.touch_manifest("a/b", d)
    assert blobs.unlink_manifest("a/b", d) and blobs.manifest_media_type("a/b", d) is None


# -- upload sessions ----------------------------------------------------------------


def uploads(backend: Backend, root: Path) -> UploadStore:
    return UploadStore(Layout(root), BlobStore(Layout(root), backend),
                       max_per_repository=100, max_age=3600)


@pytest.mark.parametrize("chunks", [[10], [100, 2 * MIB, 3 * MIB + 5, 1], [PART, PART + 1, 7],
                                    [300 * 1024] * 20],
                         ids=["one", "across-a-part", "whole-parts", "many-small"])
def test_chunked_upload_is_the_concatenation(backend: Backend, tmp_path: Path,
                                             chunks: list[int]) -> None:
    store = uploads(backend, tmp_path / "root")
    pieces = [os.urandom(n) for n in chunks]
    data = b"".join(pieces)
    upload_id = store.start("a/b")
    offset = 0
    for piece in pieces:
        offset = store.append(upload_id, "a/b", body(piece), offset)
    assert store.size(upload_id, "a/b") == len(data)
    store.finish(upload_id, "a/b", digest_of(data), body(b""))
    assert store.blobs.read(digest_of(data)) == data
    assert store.blobs.has_layer("a/b", digest_of(data))
    assert not [o for o in backend.list(Keys.UPLOADS)]
    assert list(backend.list(Keys.upload_markers("a/b"))) == []


def test_a_session_continues_on_another_replica_and_is_rehashed(
        make_backend: Callable[[], Backend], tmp_path: Path) -> None:
    first, second = uploads(make_backend(), tmp_path / "root"), uploads(make_backend(),
                                                                         tmp_path / "root")
    pieces = [os.urandom(n) for n in (3 * MIB, 3 * MIB, 1000, 2 * MIB)]
    data = b"".join(pieces)
    upload_id = first.start("a/b")
    offset = 0
    for i, piece in enumerate(pieces):
        store = first if i % 2 == 0 else second
        offset = store.append(upload_id, "a/b", body(piece), offset)
        assert (first if i % 2 else second).size(upload_id, "a/b") == offset
    # A chunk at a stale offset is refused and changes nothing.
    with pytest.raises(errors.RangeInvalid):
        first.append(upload_id, "a/b", body(b"x"), 5)
    # The PUT's own chunk is the last: the digest covers every byte, and the
    # replica that finishes saw only some of them, so it hashes what is stored.
    second.finish(upload_id, "a/b", digest_of(data + b"tail"), body(b"tail"))
    assert first.blobs.size(digest_of(data)) is None
    assert first.blobs.read(digest_of(data + b"tail")) == data + b"tail"


def test_a_failed_chunk_changes_nothing(backend: Backend, tmp_path: Path) -> None:
    store = uploads(backend, tmp_path / "root")
    upload_id = store.start("a/b")
    good = os.urandom(PART + 3)
    assert store.append(upload_id, "a/b", body(good)) == len(good)
    short = Body(PART + 100, stream=io.BytesIO(os.urandom(PART + 50)))
    with pytest.raises(errors.SizeInvalid):
        store.append(upload_id, "a/b", short, len(good))
    assert store.size(upload_id, "a/b") == len(good)
    rest = os.urandom(2000)
    store.append(upload_id, "a/b", body(rest), len(good))
    store.finish(upload_id, "a/b", digest_of(good + rest), body(b""))
    assert store.blobs.read(digest_of(good + rest)) == good + rest


@pytest.mark.parametrize("last", [1000, 2 * PART + 5], ids=["small", "parts"])
def test_a_failed_put_leaves_the_session_as_acknowledged(backend: Backend, tmp_path: Path,
                                                          last: int) -> None:
    store = uploads(backend, tmp_path / "root")
    upload_id = store.start("a/b")
    first = os.urandom(3000)
    store.append(upload_id, "a/b", body(first))
    rest = os.urandom(last)
    whole = digest_of(first + rest)
    short = Body(len(rest), stream=io.BytesIO(rest[:-1]))
    with pytest.raises(errors.SizeInvalid):
        store.finish(upload_id, "a/b", whole, short)
    assert store.blobs.size(whole) is None
    assert store.size(upload_id, "a/b") == len(first)
    # Retried, on another process that has no running hash: the same answer.
    again = uploads(backend, tmp_path / "root")
    assert again.finish(upload_id, "a/b", whole, body(rest)) == len(first) + last
    assert again.blobs.read(whole) == first + rest


def test_a_wrong_digest_removes_the_session_and_shows_nothing(backend: Backend,
                                                              tmp_path: Path) -> None:
    store = uploads(backend, tmp_path / "root")
    upload_id = store.start("a/b")
    data = os.urandom(PART + 7)
    store.append(upload_id, "a/b", body(data))
    wrong = digest_of(b"not it")
    with pytest.raises(errors.DigestInvalid):
        store.finish(upload_id, "a/b", wrong, body(b""))
    assert store.blobs.size(wrong) is None and store.blobs.size(digest_of(data)) is None
    with pytest.raises(errors.BlobUploadUnknown):
        store.size(upload_id, "a/b")


def test_cancel_and_purge_remove_sessions(backend: Backend, tmp_path: Path) -> None:
    store = uploads(backend, tmp_path / "root")
    kept, cancelled, old = (store.start("a/b") for _ in range(3))
    for upload_id in (kept, cancelled, old):
        store.append(upload_id, "a/b", body(os.urandom(PART + 1)))
    store.cancel(cancelled, "a/b")
    with pytest.raises(errors.BlobUploadUnknown):
        store.size(cancelled, "a/b")
    store.max_age = 3600
    assert store.purge(now=time.time()) == 0
    found = {s.upload_id for s in store.abandoned(now=time.time() + 7200)}
    assert found == {kept, old}
    assert store.purge(now=time.time() + 7200) == 2
    assert list(backend.list(Keys.UPLOADS)) == []


@pytest.mark.parametrize("chunks", [
    [],                       # monolithic: the PUT's body goes straight to the blob
    [1000],                   # a tail kept in the state
    [2 * MIB],                # a tail of its own object
    [PART + 3],               # a part uploaded: completed, then copied
], ids=["monolithic", "inline-tail", "tail-object", "multipart"])
def test_finishing_leaves_no_session_behind(backend: Backend, tmp_path: Path,
                                            chunks: list[int]) -> None:
    store = uploads(backend, tmp_path / "root")
    data = os.urandom(sum(chunks) + 777)
    upload_id = store.start("f/g")
    offset = 0
    for n in chunks:
        offset = store.append(upload_id, "f/g", body(data[offset:offset + n]), offset)
    store.finish(upload_id, "f/g", digest_of(data), body(data[offset:]))
    assert store.blobs.read(digest_of(data)) == data
    assert list(backend.list(Keys.upload(upload_id))) == []
    assert list(backend.list(Keys.upload_markers("f/g"))) == []
    assert store.blobs.layer_size("f/g", digest_of(data)) == len(data)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=0, max_value=3 * MIB), min_size=1, max_size=4))
def test_any_chunking_stores_the_bytes(backend: Backend, tmp_path: Path,
                                       sizes: list[int]) -> None:
    store = uploads(backend, tmp_path / "root")
    data = os.urandom(sum(sizes))
    upload_id = store.start("p/q")
    offset = 0
    for n in sizes:
        offset = store.append(upload_id, "p/q", body(data[offset:offset + n]), offset)
    store.finish(upload_id, "p/q", digest_of(data), body(b""))
    assert store.blobs.read(digest_of(data)) == data


# -- locks ----------------------------------------------------------------------------


def test_a_lock_excludes_another_replica(make_backend: Callable[[], Backend]) -> None:
    one, two = make_backend(), make_backend()
    inside: list[str] = []
    entered = threading.Event()

    def hold() -> None:
        with one.lock("locks/ab"):
            inside.append("one-in")
            entered.set()
            time.sleep(0.5)
            inside.append("one-out")

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(10)
    with two.lock("locks/ab"):
        inside.append("two-in")
    thread.join()
    assert inside == ["one-in", "one-out", "two-in"]


# -- what only the object store has --------------------------------------------------


def s3_only(backend: Backend) -> Any:
    if backend.kind != "s3":
        pytest.skip("object store only")
    return backend


def test_s3_a_dead_holders_lock_is_taken_over_when_its_lease_ends(backend: Backend) -> None:
    b = s3_only(backend)
    b.put("locks/dead", msgpack.packb({"token": "gone", "expires": time.time() + 1.0}))
    started = time.monotonic()
    with b.lock("locks/dead"):
        waited = time.monotonic() - started
    assert 0.5 < waited < 5
    assert b.stat("locks/dead") is None


def test_s3_a_lock_of_a_dead_process_on_this_machine_is_taken_over_at_once(
        backend: Backend) -> None:
    import socket
    import subprocess

    from services.storage.backends.s3_leases import _PIDNS

    b = s3_only(backend)
    gone = subprocess.Popen(["true"])
    gone.wait()
    here = {"host": socket.gethostname(), "pidns": _PIDNS}
    b.put("locks/killed", msgpack.packb({"token": "t", "expires": time.time() + 60,
                                         **here, "pid": gone.pid}))
    started = time.monotonic()
    with b.lock("locks/killed"):
        assert time.monotonic() - started < 2
    # A live holder's lock (pid 1 is always alive) is waited for, up to the timeout.
    b.timeout = 0.5
    b.put("locks/alive", msgpack.packb({"token": "t", "expires": time.time() + 60,
                                        **here, "pid": 1}))
    with pytest.raises(errors.Unavailable), b.lock("locks/alive"):
        pass
    # So is a dead pid of another PID namespace with this host name (containers on
    # the host's network), or of a holder that did not say which namespace.
    for other in ({**here, "pidns": "0:1"}, {"host": here["host"]}):
        b.put("locks/elsewhere", msgpack.packb({"token": "t", "expires": time.time() + 60,
                                                **other, "pid": gone.pid}))
        with pytest.raises(errors.Unavailable), b.lock("locks/elsewhere"):
            pass


def test_s3_the_purge_aborts_orphaned_multipart_uploads(backend: Backend) -> None:
    b = s3_only(backend)
    orphan = b.client.create_multipart_upload(Bucket=b.bucket, Key=b.prefix + "uploads/"
                                              + "f" * 32 + "/data")["UploadId"]
    assert b.purge_orphans(3600) == 0
    assert b.purge_orphans(0) >= 1
    listed = b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix)
    assert orphan not in [u["UploadId"] for u in listed.get("Uploads", [])]


def test_s3_a_redirect_is_a_presigned_url_that_serves_ranges(backend: Backend) -> None:
    b = s3_only(backend)
    assert b.redirect_url("blobs/x") is None
    b.redirect = True
    data = os.urandom(5000)
    b.put("blobs/x", data)
    url = b.redirect_url("blobs/x")
    assert url is not None
    http = urllib3.PoolManager()
    assert http.request("GET", url).data == data
    r = http.request("GET", url, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.data == data[10:20]


def test_s3_racing_small_appends_acknowledge_one(
        make_backend: Callable[[], Backend], tmp_path: Path) -> None:
    # Small appends take no lock: their one conditional write of the state decides.
    one, two = s3_only(make_backend()), make_backend()
    store_one, store_two = uploads(one, tmp_path / "root"), uploads(two, tmp_path / "root")
    upload_id = store_one.start("r/s")
    with one.session(upload_id) as first, two.session(upload_id) as second:
        assert second.append(body(b"second"), None) == 6
        with pytest.raises(errors.Unavailable):
            first.append(body(b"first!"), None)
    assert store_one.size(upload_id, "r/s") == 6
    # The client whose append failed retries at the offset the session is at.
    with pytest.raises(errors.RangeInvalid):
        store_one.append(upload_id, "r/s", body(b"first!"), 0)
    store_one.append(upload_id, "r/s", body(b"first!"), 6)
    store_two.finish(upload_id, "r/s", digest_of(b"secondfirst!"), body(b""))
    assert store_two.blobs.read(digest_of(b"secondfirst!")) == b"secondfirst!"


def test_s3_a_kept_session_state_is_read_again_once_another_replica_wrote(
        make_backend: Callable[[], Backend], tmp_path: Path) -> None:
    one, two = s3_only(make_backend()), make_backend()
    store_one, store_two = uploads(one, tmp_path / "root"), uploads(two, tmp_path / "root")
    upload_id = store_one.start("r/u")
    for i, (store, chunk) in enumerate([(store_one, b"a" * 1000), (store_one, b"b" * 10),
                                        (store_two, b"c" * 20), (store_one, b"d" * 5)]):
        offset = store.size(upload_id, "r/u")
        assert offset == [0, 1000, 1010, 1030][i]
        store.append(upload_id, "r/u", body(chunk), offset)
    data = b"a" * 1000 + b"b" * 10 + b"c" * 20 + b"d" * 5
    store_two.finish(upload_id, "r/u", digest_of(data), body(b""))
    assert store_one.blobs.read(digest_of(data)) == data


def test_s3_an_append_racing_the_finishing_put_is_not_lost_silently(
        make_backend: Callable[[], Backend], tmp_path: Path) -> None:
    one, two = s3_only(make_backend()), make_backend()
    store = uploads(one, tmp_path / "root")
    upload_id = store.start("r/t")
    store.append(upload_id, "r/t", body(b"abc"), 0)
    d = digest_of(b"abcdef")
    # The PUT read the state; an append lands before the PUT records it is done: the
    # PUT fails (the client retries it), the blob is not linked into the repository.
    with one.session(upload_id) as putting:
        staged = putting.seal(body(b"def"), hashlib.sha256(b"abc"), Keys.blob(d))
        with two.session(upload_id) as appending:
            appending.append(body(b"ghi"), None)
        with pytest.raises(errors.Unavailable):
            staged.commit(Keys.blob(d))
    assert store.blobs.layer_size("r/t", d) is None
    assert store.size(upload_id, "r/t") == 6
    # Once a PUT recorded the session done, no append is taken.
    done = Keys.blob(digest_of(b"abcghi"))
    with two.session(upload_id) as late:
        with one.session(upload_id) as putting:
            putting.seal(body(b""), hashlib.sha256(b"abcghi"), done).commit(done)
        with pytest.raises(errors.Unavailable):
            late.append(body(b"jkl"), None)
    with one.session(upload_id) as after, pytest.raises(errors.BlobUploadInvalid):
        after.append(body(b"jkl"), None)
    # A retried PUT of a done session links what the first one committed.
    store.finish(upload_id, "r/t", digest_of(b"abcghi"), body(b""))
    assert store.blobs.read(digest_of(b"abcghi")) == b"abcghi"
    assert store.blobs.layer_size("r/t", digest_of(b"abcghi")) == 6


def test_s3_found_layer_links_are_trusted_for_a_bounded_time(
        make_backend: Callable[[], Backend], monkeypatch: pytest.MonkeyPatch) -> None:
    from services.storage.backends import s3

    one, two = s3_only(make_backend()), make_backend()
    monkeypatch.setattr(s3, "LINK_TTL", 1.0)
    blobs_one, blobs_two = BlobStore(Layout(one.scratch.parent), one), BlobStore(
        Layout(one.scratch.parent), two)
    data = os.urandom(100)
    d = digest_of(data)
    blobs_two.ingest_bytes(data, d)
    assert blobs_one.layer_size("l/m", d) is None  # not found: nothing kept
    blobs_two.link_layer("l/m", d)
    assert blobs_one.layer_size("l/m", d) == 100  # a new link is seen at once
    # Deleted through this replica: forgotten at once.
    blobs_one.unlink_layer("l/m", d)
    assert blobs_one.layer_size("l/m", d) is None
    # Deleted through another replica: seen here within LINK_TTL.
    blobs_two.link_layer("l/m", d)
    assert blobs_one.layer_size("l/m", d) == 100
    blobs_two.unlink_layer("l/m", d)
    deadline = time.monotonic() + 1.0
    while blobs_one.layer_size("l/m", d) is not None:
        assert time.monotonic() < deadline + 0.5, "a deleted link served past LINK_TTL"
        time.sleep(0.05)
    # A manifest link is never kept: its media type is read each time.
    key = Keys.manifest_link("l/m", d)
    two.set_record(key, "a")
    assert one.get_record(key) == "a"
    two.set_record(key, "b")
    assert one.get_record(key) == "b"


def test_s3_an_unreachable_store_is_unavailable_within_the_timeout(tmp_path: Path) -> None:
    from tests.support.seaweedfs import require

    require()
    from services.storage.backends.s3 import S3Backend
    from tests.support.processes import free_port

    cfg = {"endpoint": f"http://127.0.0.1:{free_port()}", "region": "us-east-1",
           "bucket": "b", "prefix": "", "access_key": "k", "secret_key": "s",
           "path_style": True, "verify_tls": True, "part_size": PART, "redirect": False,
           "timeout": 1.0, "create_bucket": True}
    b = S3Backend(cfg, scratch=tmp_path)
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as info:
        b.stat("blobs/x")
    assert info.value.status == 503 and "Retry-After" in info.value.headers
    ok, detail = b.ready()
    assert not ok and detail["object_store_reachable"] is False
    assert time.monotonic() - started < 5


# -- configuration ----------------------------------------------------------------------


def test_the_s3_backend_is_configured_or_refused_by_name() -> None:
    from shared import config

    base = {"DOCKYARD_STORAGE_BACKEND": "s3"}
    with pytest.raises(config.ConfigError, match=r"storage\.s3\.bucket: required"):
        config.load(None, environ=base)
    good = {**base, "DOCKYARD_STORAGE_S3_BUCKET": "b",
            "DOCKYARD_STORAGE_S3_ENDPOINT": "http://127.0.0.1:8333",
            "DOCKYARD_STORAGE_S3_ACCESS_KEY": "_env:KEY", "KEY": "AKIAEXAMPLE",
            "DOCKYARD_STORAGE_S3_SECRET_KEY": "very-secret"}
    cfg = config.load(None, environ=good)
    assert cfg["storage"]["s3"]["access_key"] == "AKIAEXAMPLE"
    assert cfg["storage"]["s3"]["part_size"] == 8 * MIB and cfg["storage"]["s3"]["path_style"]
    shown = config.dump(cfg)
    assert "AKIAEXAMPLE" not in shown and "very-secret" not in shown
    with pytest.raises(config.ConfigError, match=r"storage\.s3\.part_size .*: must be at least"):
        config.load(None, environ={**good, "DOCKYARD_STORAGE_S3_PART_SIZE": "1048576"})
    with pytest.raises(config.ConfigError, match=r"storage\.s3\.endpoint: not an http URL"):
        config.load(None, environ={**good, "DOCKYARD_STORAGE_S3_ENDPOINT": "127.0.0.1:8333"})
    with pytest.raises(config.ConfigError, match=r"storage\.s3\.secret_key: must be set"):
        config.load(None, environ={**base, "DOCKYARD_STORAGE_S3_BUCKET": "b",
                                   "DOCKYARD_STORAGE_S3_ACCESS_KEY": "k"})
    # The pull-through cache works on an object store (docs/pull-through-cache.md).
    upstreams = '[{"prefix": "hub", "url": "https://registry-1.docker.io"}]'
    mirrored = config.load(None, environ={**good, "DOCKYARD_PROXY_UPSTREAMS": upstreams})
    assert mirrored["proxy"]["upstreams"][0]["prefix"] == "hub"
    assert mirrored["storage"]["backend"] == "s3"
    assert config.load(None, environ={})["storage"]["backend"] == "filesystem"


def test_boto3_is_imported_only_for_the_s3_backend() -> None:
    import subprocess
    import sys

    probe = ("import sys; import services.storage.app, services.cli; "
             "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr


def test_s3_a_put_sent_again_after_sealing_completes_with_the_same_body(
        backend: Backend, tmp_path: Path) -> None:
    """A PUT that sealed the session (multipart completed) and then failed before the
    blob appeared, sent again with its body as a client does: accepted when the body
    is the sealed end, byte for byte, and refused (nothing stored) when it differs."""
    if backend.kind != "s3":
        pytest.skip("only an object store seals a session before committing it")
    store = uploads(backend, tmp_path / "root")
    upload_id = store.start("a/b")
    first, last = os.urandom(PART + 11), os.urandom(70_000)
    store.append(upload_id, "a/b", body(first))
    whole = digest_of(first + last)
    with backend.session(upload_id) as session:
        session.seal(body(last), None, Keys.blob(whole))     # then the replica failed
    with backend.session(upload_id) as session:
        assert session.size == len(first) + len(last)
        with pytest.raises(errors.BlobUploadInvalid):
            session.seal(body(os.urandom(len(last))), None, Keys.blob(whole))
        with pytest.raises(errors.BlobUploadInvalid):
            session.seal(body(os.urandom(len(first) + len(last) + 1)), None,
                         Keys.blob(whole))
    assert store.blobs.size(whole) is None
    again = uploads(backend, tmp_path / "root")
    assert again.finish(upload_id, "a/b", whole, body(last)) == len(first) + len(last)
    assert again.blobs.read(whole) == first + last


def test_s3_a_large_session_is_copied_part_by_part_into_its_digest(
        backend: Backend, tmp_path: Path) -> None:
    """Above the backend's whole-copy size, the last step of a chunked upload copies
    `data` into the digest's key by UploadPartCopy calls, each bounded by the
    timeout, and one CompleteMultipartUpload: the blob appears whole, at once."""
    if backend.kind != "s3":
        pytest.skip("only an object store copies a finished session")
    from boto3.s3.transfer import TransferConfig

    b: Any = backend
    b._copy_config = TransferConfig(multipart_threshold=PART, multipart_chunksize=2 * PART)
    store = uploads(backend, tmp_path / "root")
    upload_id = store.start("a/b")
    data = os.urandom(3 * PART + 4321)
    for i in range(0, len(data), 2 * MIB):
        store.append(upload_id, "a/b", body(data[i:i + 2 * MIB]))
    digest = digest_of(data)
    assert store.finish(upload_id, "a/b", digest, body(b"")) == len(data)
    assert store.blobs.read(digest) == data
    head = b.client.head_object(Bucket=b.bucket, Key=b.prefix + Keys.blob(digest))
    # A multipart object's ETag ends in its part count: the session had 4 parts,
    # the copy 2 (a CopyObject would keep the source's "-4").
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]


# -- the pull-through cache's eviction clock ----------------------------------------


def test_a_pull_moves_a_cached_manifest_links_last_write(backend: Backend) -> None:
    """`proxy.eviction.Evictor.touch`: the link's mtime on a filesystem, the link written
    again on S3 (an object's time is its last write); and a link pulled within max_age is
    not evicted."""
    from services.storage.proxy.eviction import Evictor
    from services.storage.proxy.settings import Upstream, UpstreamMap

    layout = getattr(backend, "layout", None) or Layout(backend.scratch.parent)  # type: ignore[attr-defined]
    blobs = BlobStore(layout, backend)
    data = b'{"schemaVersion": 2}'
    digest = digest_of(data)
    name, media_type = "up/team/app", "application/vnd.oci.image.manifest.v1+json"
    blobs.ingest_bytes(data, digest)
    blobs.link_manifest(name, digest, media_type)
    link = Keys.manifest_link(name, digest)
    first = backend.stat(link)
    assert first is not None
    evictor = Evictor(UpstreamMap([Upstream("up", "http://127.0.0.1:9", max_age=5)]), blobs,
                      index=None)
    time.sleep(1.1)  # S3's LastModified counts whole seconds
    evictor.touch(name, digest)
    touched = backend.stat(link)
    assert touched is not None and touched.mtime_ns > first.mtime_ns
    assert blobs.manifest_media_type(name, digest) == media_type
    # As of 4 s after the pull, within max_age: nothing to evict (nor to ask the index).
    assert evictor.run_once(now=touched.mtime_ns / 1e9 + 4) == 0
    assert blobs.manifest_links(name) == [digest]
