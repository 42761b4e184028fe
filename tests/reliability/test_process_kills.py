"""`kill -9` of storage, index and Redis under load, through the router.

What must hold: an acknowledged (201) push survives; a push that fails gets a
503 with an OCI error body quickly (no hang, no 500); a partial blob is never
visible under its digest; an interrupted upload resumes from the offset the
registry reports.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pytest

from services.storage.blobstore import BlobStore
from services.storage.paths import Layout
from services.storage.uploads import UploadStore
from tests.reliability.helpers import (
    MiB,
    assert_blob_served,
    assert_blobs_intact,
    assert_no_debris,
    assert_no_internal_errors,
    assert_oci_error,
    assert_pullable,
    blob_path,
    finish_upload,
    listed_tags,
    patch_chunk,
    storage_root,
    upload_offset,
)
from tests.support.processes import Dockyard, wait_http
from tests.support.registry_client import RegistryClient, sha256

# A request to a registry whose backend just died must be answered within this:
# the RPC timeout is 5 s, so anything longer is a hang.
ANSWER_WITHIN = 15.0


@pytest.mark.slow
def test_storage_killed_mid_patch_upload_resumes(fresh_dockyard: Dockyard) -> None:
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=120)
    name = "reliability/storage-kill"
    chunk = 32 * MiB
    # Three chunks: one acknowledged before the kill, one in flight, one after.
    blob = random.Random(7).randbytes(3 * chunk)
    digest = sha256(blob)
    root = storage_root(d)

    location = client.start_upload(name)
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    data_file = root / "uploads" / upload_id / "data"
    r = patch_chunk(client, location, blob[:chunk], 0)
    assert r.status == 202, (r.status, r.data)

    in_flight: list[tuple[int, bytes]] = []

    def second_patch() -> None:
        resp = patch_chunk(client, location, blob[chunk:2 * chunk], chunk)
        in_flight.append((resp.status, resp.data))

    sender = threading.Thread(target=second_patch)
    sender.start()
    # Kill while storage is appending the chunk: the data file has grown past the first
    # chunk but not reached the second's end. If that moment is missed (the machine is
    # fast) the kill still lands with the request in flight or just answered, and the
    # assertions below hold for every one of those cases.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sender.is_alive():
        if data_file.exists() and data_file.stat().st_size > chunk:
            break
        time.sleep(0.001)
    old_pid = d.kill("storage")
    sender.join(ANSWER_WITHIN + 60)
    assert not sender.is_alive() and in_flight, "the in-flight PATCH was never answered"
    status, body = in_flight[0]
    if status != 202:
        # The router saw its backend die: a retryable 503, never a 500.
        assert status == 503, (status, body)
        assert_oci_error(body, "UNAVAILABLE")

    d.wait_restarted("storage", old_pid, timeout=30)
    # Nothing is visible under the digest while the upload is unfinished.
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert not blob_path(root, digest).exists()

    # The client asks where the upload stands and continues from there. The first
    # chunk was acknowledged, so it is kept; what the killed process wrote of the
    # second is a prefix of it (appends are in order), so it may be kept too.
    offset = upload_offset(client, location)
    assert chunk <= offset <= 2 * chunk, offset
    if status == 202:
        assert offset == 2 * chunk
    r = patch_chunk(client, location, blob[offset:], offset)
    assert r.status == 202, (r.status, r.data)
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    r = finish_upload(client, location, digest)
    assert r.status == 201, (r.status, r.data)

    head = client.request("HEAD", f"/v2/{name}/blobs/{digest}")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(blob)
    got = client.request("GET", f"/v2/{name}/blobs/{digest}").data
    assert sha256(got) == digest
    assert digest in assert_blobs_intact(root)
    assert_no_debris(root)
    assert_no_internal_errors(d)


@pytest.mark.slow
def test_storage_killed_mid_whole_body_upload(fresh_dockyard: Dockyard) -> None:
    """A single-request upload (POST ?digest=) cut by a kill: the blob never appears,
    the retry succeeds, and the killed process's partial file is swept by the purge."""
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=120)
    name = "reliability/storage-kill-whole"
    blob = random.Random(8).randbytes(96 * MiB)
    digest = sha256(blob)
    root = storage_root(d)
    url = f"/v2/{name}/blobs/uploads/?digest={digest}"
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(client.request(
        "POST", url, body=blob, headers={"Content-Type": "application/octet-stream"}).status))
    sender.start()
    # Kill as soon as storage starts writing the body into tmp/.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sender.is_alive() and not any((root / "tmp").iterdir()):
        time.sleep(0.001)
    old_pid = d.kill("storage")
    sender.join(ANSWER_WITHIN + 60)
    assert answers and answers[0] in (201, 503), answers
    d.wait_restarted("storage", old_pid, timeout=30)
    if answers[0] == 503:
        assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
        assert not blob_path(root, digest).exists()
    assert_blobs_intact(root)

    r = client.request("POST", url, body=blob, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, (r.status, r.data)
    assert_blob_served(client, name, digest, len(blob))
    # What the killed process left in tmp/ is debris no live request owns; the periodic
    # purge removes it once it is older than upload_max_age (run here with its clock).
    d.stop()
    layout = Layout(root)
    UploadStore(layout, BlobStore(layout), max_per_repository=1,
                max_age=86400).purge(now=time.time() + 86401)
    assert_no_debris(root)


@dataclass
class PushLog:
    """What a push loop saw: tags answered 201 with their manifests, and failures."""

    acknowledged: dict[str, bytes] = field(default_factory=dict)
    failed: list[tuple[str, int, bytes]] = field(default_factory=list)
    slowest: float = 0.0


def push_loop(client: RegistryClient, name: str, count: int, log: PushLog,
              on_push: threading.Event | None = None, kill_after: int = 0) -> None:
    """Push `count` images one after another, recording each answer. Blobs go to
    storage alone; the manifest PUT is what needs the index and Redis."""
    deadline = time.monotonic() + 120
    for i in range(count):
        if time.monotonic() > deadline:
            raise AssertionError(f"push loop exceeded its time bound at push {i}")
        if on_push is not None and i == kill_after:
            on_push.set()
        tag = f"t{i:03d}"
        body = client.image_manifest(name)  # blobs only: asserts 201 for each
        started = time.monotonic()
        r = client.put_manifest(name, tag, body)
        log.slowest = max(log.slowest, time.monotonic() - started)
        if r.status == 201:
            assert r.headers["Docker-Content-Digest"] == sha256(body)
            log.acknowledged[tag] = body
        else:
            log.failed.append((tag, r.status, r.data))


def check_failures(log: PushLog) -> None:
    for tag, status, body in log.failed:
        assert status == 503, (tag, status, body)
        assert_oci_error(body, "UNAVAILABLE")
    assert log.slowest < ANSWER_WITHIN, f"a manifest PUT took {log.slowest:.1f}s"


def check_acknowledged(client: RegistryClient, name: str, log: PushLog) -> None:
    tags = set(listed_tags(client, name))
    for tag, body in log.acknowledged.items():
        assert tag in tags, f"acknowledged tag {tag} is not listed"
        assert_pullable(client, name, tag, body)


def kill_when(d: Dockyard, service: str, trigger: threading.Event, times: int,
              gap: float, errors: list[BaseException]) -> None:
    """Kill `service` when `trigger` is set, `times` times `gap` seconds apart, each
    time waiting for the supervisor to bring it back."""
    try:
        if not trigger.wait(60):
            raise AssertionError("the push loop never reached the kill point")
        for _ in range(times):
            pid = d.kill(service)
            d.wait_restarted(service, pid, timeout=30)
            time.sleep(gap)
    except BaseException as e:  # reported by the test thread
        errors.append(e)


@pytest.mark.slow
def push_while_killing(d: Dockyard, service: str, client: RegistryClient, name: str,
                       count: int, log: PushLog, kill_after: int) -> None:
    """Push `count` images while `service` is killed twice, then wait until all is ready."""
    trigger = threading.Event()
    errors: list[BaseException] = []
    killer = threading.Thread(target=kill_when, args=(d, service, trigger, 2, 0.3, errors))
    killer.start()
    try:
        push_loop(client, name, count, log, on_push=trigger, kill_after=kill_after)
    finally:
        trigger.set()
        killer.join(90)
    assert not errors, errors
    wait_http(d.url + "/readyz", 30)


def test_index_killed_during_pushes(fresh_dockyard: Dockyard) -> None:
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/index-kill"
    log = PushLog()
    push_while_killing(d, "index", client, name, 50, log, kill_after=10)

    # The index was down for a while, so some pushes must have been refused; all
    # of those were refused cleanly, and every acknowledged one survived.
    assert log.failed, "the index kills never affected a push; the test proved nothing"
    check_failures(log)
    assert len(log.acknowledged) + len(log.failed) == 50
    check_acknowledged(client, name, log)
    assert_blobs_intact(storage_root(d))
    assert_no_internal_errors(d)


@pytest.mark.slow
def test_redis_restarted_between_and_during_pushes(fresh_dockyard: Dockyard) -> None:
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/redis-restart"

    # Between pushes: everything acknowledged before the restart is still there.
    before = PushLog()
    push_loop(client, name, 10, before)
    assert not before.failed, before.failed
    pid = d.kill("redis")
    d.wait_restarted("redis", pid, timeout=30)
    check_acknowledged(client, name, before)

    # During pushes: Redis goes away twice while a loop pushes.
    during = PushLog()
    push_while_killing(d, "redis", client, name + "-b", 30, during, kill_after=5)
    assert during.failed, "the Redis restarts never affected a push; the test proved nothing"
    check_failures(during)
    check_acknowledged(client, name + "-b", during)
    # The first batch is untouched by the second round of restarts.
    check_acknowledged(client, name, before)
    # The catalog still knows both repositories.
    status, _, body = client.json("GET", "/v2/_catalog")
    assert status == 200 and {name, name + "-b"} <= set(body["repositories"]), body
    assert_no_internal_errors(d)
