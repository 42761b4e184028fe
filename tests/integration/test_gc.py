"""`dockyard gc` against a running `dockyard serve`: what it deletes, what it keeps,
and the rows of distribution's garbage-collection bugs.

The module has a dockyard of its own: collections with no grace period would
delete what other tests of the shared session registry are in the middle of.
It runs once per storage backend: on a directory, and on S3 (a bucket of the
session SeaweedFS), where the collector's fences live in Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    direct,
    service_url,
    unique_repo,
)
from tests.support import seaweedfs as seaweed
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import RegistryClient, sha256


def backend_env(request: pytest.FixtureRequest, backend: str) -> dict[str, str]:
    return seaweed.backend_env(request, backend, "gc")


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def gc_dockyard(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    env = {"DOCKYARD_GC_INTERVAL": "0", **backend_env(request, request.param)}
    with Dockyard(tmp_path_factory.mktemp("gc") / "data", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def gc_client(gc_dockyard: Dockyard) -> RegistryClient:
    return RegistryClient(gc_dockyard.url)


def cli(d: Dockyard, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`dockyard ARGS --data-dir` of `d`, with `d`'s environment (its backend's)."""
    return subprocess.run([str(VENV_BIN / "dockyard"), *args, "--data-dir", str(d.data_dir)],
                          env={**os.environ, **d.env}, capture_output=True, text=True,
                          timeout=120, **kwargs)


def run_gc(d: Dockyard, *args: str) -> dict[str, Any]:
    out = cli(d, "gc", "--grace", "0", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def deleted(report: dict[str, Any], kind: str) -> set[str]:
    return {i["name"] for i in report["items"] if i["kind"] == kind}


def blob_path(d: Dockyard, digest: str) -> Path:
    algorithm, hexpart = digest.split(":")
    return d.data_dir / "storage" / "blobs" / algorithm / hexpart[:2] / hexpart


def stored(d: Dockyard, digest: str) -> bool:
    """Whether the blob's bytes are in `d`'s storage: its file, or its object."""
    bucket = seaweed.bucket_of(d.env)
    if bucket is None:
        return blob_path(d, digest).exists()
    access, name, prefix = bucket
    algorithm, hexpart = digest.split(":")
    found = access.client().list_objects_v2(
        Bucket=name, Prefix=f"{prefix}blobs/{algorithm}/{hexpart[:2]}/{hexpart}")
    return bool(found.get("Contents"))


def image_digests(body: bytes) -> list[str]:
    doc = json.loads(body)
    return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def assert_pulls(client: RegistryClient, name: str, ref: str, body: bytes) -> None:
    r = client.get_manifest(name, ref)
    assert r.status == 200 and r.data == body, (r.status, r.data[:200])
    for digest in image_digests(body):
        b = client.request("GET", f"/v2/{name}/blobs/{digest}")
        assert b.status == 200 and sha256(b.data) == digest


def test_unreferenced_blobs_go_and_tagged_images_stay(gc_dockyard: Dockyard,
                                                      gc_client: RegistryClient) -> None:
    name = unique_repo("gc")
    kept_digest, kept = gc_client.push_image(name, "keep")
    gone_digest, gone = gc_client.push_image(name, "gone")
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/{gone_digest}").status == 202
    orphan = gc_client.push_blob(name, b"uploaded, never referenced")

    dry = run_gc(gc_dockyard, "--dry-run")
    assert {*image_digests(gone), gone_digest, orphan} <= deleted(dry, "blob")
    assert stored(gc_dockyard, orphan)

    report = run_gc(gc_dockyard)
    assert deleted(report, "blob") == deleted(dry, "blob")
    assert report["bytes"] == dry["bytes"] > 0
    for digest in (*image_digests(gone), gone_digest, orphan):
        assert not stored(gc_dockyard, digest)
    assert_pulls(gc_client, name, "keep", kept)
    assert_pulls(gc_client, name, kept_digest, kept)
    # A second run finds nothing more.
    assert run_gc(gc_dockyard)["counts"]["blob"] == 0


def test_untagged_manifests_follow_the_policy(gc_dockyard: Dockyard,
                                              gc_client: RegistryClient) -> None:
    name = unique_repo("gc")
    old_digest, old = gc_client.push_image(name, "latest")
    _, new = gc_client.push_image(name, "latest")   # `old` is untagged now
    assert old_digest not in deleted(run_gc(gc_dockyard), "manifest")
    assert gc_client.get_manifest(name, old_digest).status == 200

    report = run_gc(gc_dockyard, "--untagged-max-age", "0")
    assert old_digest in deleted(report, "manifest")
    assert gc_client.get_manifest(name, old_digest).status == 404
    assert not stored(gc_dockyard, image_digests(old)[1])
    assert_pulls(gc_client, name, "latest", new)


def test_indexes_keep_children_and_subjects_keep_referrers(gc_dockyard: Dockyard,
                                                           gc_client: RegistryClient) -> None:
    name = unique_repo("gc")
    child_digest, child = gc_client.push_image(name, "child-tmp")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    r = gc_client.put_manifest(name, "multi", index, OCI_INDEX)
    assert r.status == 201
    # Untagged: only the index keeps the child now.
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/child-tmp").status == 202
    signature = gc_client.image_manifest(name, subject={
        "mediaType": OCI_MANIFEST, "digest": child_digest, "size": len(child)},
        artifact_type="application/vnd.example.signature")
    sig = gc_client.put_manifest(name, sha256(signature), signature)
    assert sig.status == 201

    report = run_gc(gc_dockyard, "--untagged-max-age", "0")
    assert not deleted(report, "manifest") & {child_digest, sha256(signature)}
    assert_pulls(gc_client, name, child_digest, child)
    assert_pulls(gc_client, name, sha256(signature), signature)

    # Untag the index: the child and its signature have nothing left to keep them.
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/multi").status == 202
    report = run_gc(gc_dockyard, "--untagged-max-age", "0")
    assert {sha256(index), child_digest, sha256(signature)} <= deleted(report, "manifest")
    assert gc_client.get_manifest(name, child_digest).status == 404


def test_shared_and_mounted_layers_stay_while_one_repository_needs_them(
        gc_dockyard: Dockyard, gc_client: RegistryClient) -> None:
    a, b = unique_repo("gc"), unique_repo("gc")
    digest_a, body_a = gc_client.push_image(a, "v1")
    layer = image_digests(body_a)[1]
    mounted = gc_client.request("POST", f"/v2/{b}/blobs/uploads/?mount={layer}&from={a}")
    assert mounted.status == 201
    doc = json.loads(gc_client.image_manifest(b))
    doc["layers"].append(json.loads(body_a)["layers"][0])
    body_b = json.dumps(doc).encode()
    assert gc_client.put_manifest(b, "v1", body_b).status == 201

    assert gc_client.request("DELETE", f"/v2/{a}/manifests/{digest_a}").status == 202
    report = run_gc(gc_dockyard)
    assert layer not in deleted(report, "blob")
    assert stored(gc_dockyard, layer)
    assert_pulls(gc_client, b, "v1", body_b)
    # a's link to the layer went with a's last manifest; b's stays.
    assert gc_client.request("HEAD", f"/v2/{a}/blobs/{layer}").status == 404


def test_repush_after_gc_is_stored_again_and_pulls(gc_dockyard: Dockyard,
                                                   gc_client: RegistryClient) -> None:
    """distribution #1803, #3743, #4569: after a GC, a push of the same layers was
    skipped as "already exists" and the image could not be pulled."""
    name = unique_repo("gc")
    digest, body = gc_client.push_image(name, "v1")
    layers = {d: gc_client.request("GET", f"/v2/{name}/blobs/{d}").data
              for d in image_digests(body)}
    assert gc_client.get_manifest(name, "v1").status == 200     # cached by the router now
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    report = run_gc(gc_dockyard)
    assert set(layers) <= deleted(report, "blob")

    for d, data in layers.items():
        # No cache may still say it exists: the client must upload it again.
        assert gc_client.request("HEAD", f"/v2/{name}/blobs/{d}").status == 404
        assert gc_client.push_blob(name, data) == d
    assert gc_client.put_manifest(name, "v1", body).status == 201
    assert_pulls(gc_client, name, "v1", body)
    for d in layers:
        assert stored(gc_dockyard, d)


def test_layers_uploaded_before_a_collection_refuse_the_manifest_not_corrupt_it(
        gc_dockyard: Dockyard, gc_client: RegistryClient) -> None:
    """distribution #3045, #2881: GC during a push deleted its layers and the pushed
    image was corrupt. With no grace period, layers uploaded before the collection
    and named by no manifest yet are garbage: the manifest PUT that follows must be
    refused (the client uploads again), never acknowledged without its layers."""
    name = unique_repo("gc")
    body = gc_client.image_manifest(name)
    run_gc(gc_dockyard)
    r = gc_client.put_manifest(name, "v1", body)
    assert r.status == 400 and b"MANIFEST_BLOB_UNKNOWN" in r.data
    assert gc_client.get_manifest(name, "v1").status == 404

    # With the default grace period, the same sequence keeps the layers.
    body = gc_client.image_manifest(name)
    out = cli(gc_dockyard, "gc", "--json")
    assert out.returncode == 0, out.stderr
    assert gc_client.put_manifest(name, "v1", body).status == 201
    assert_pulls(gc_client, name, "v1", body)


def test_head_during_the_grace_period_keeps_a_blob_for_the_push_that_asked(
        gc_dockyard: Dockyard, gc_client: RegistryClient) -> None:
    name = unique_repo("gc")
    digest, body = gc_client.push_image(name, "v1")
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    # A client about to push the same image again asks whether the layers exist...
    for d in image_digests(body):
        assert gc_client.request("HEAD", f"/v2/{name}/blobs/{d}").status == 200
    out = cli(gc_dockyard, "gc", "--grace", "60", "--json")
    assert out.returncode == 0, out.stderr
    # ... and its manifest, which skipped the uploads, finds them.
    assert gc_client.put_manifest(name, "v1", body).status == 201
    assert_pulls(gc_client, name, "v1", body)


def test_abandoned_uploads_go(gc_dockyard: Dockyard, gc_client: RegistryClient) -> None:
    if seaweed.bucket_of(gc_dockyard.env):
        pytest.skip("ages a session's file; on S3 the upload purge's own tests age them "
                    "(tests/integration/test_s3_backend.py)")
    name = unique_repo("gc")
    location = gc_client.start_upload(name)
    upload_id = location.rstrip("/").split("/")[-1].split("?")[0]
    info = gc_dockyard.data_dir / "storage" / "uploads" / upload_id / "info"
    import msgpack

    meta = msgpack.unpackb(info.read_bytes())
    meta["started"] -= 2 * 86400
    info.write_bytes(msgpack.packb(meta))
    report = run_gc(gc_dockyard)
    assert upload_id in deleted(report, "upload")
    assert not info.parent.exists()
    assert gc_client.request("GET", location).status == 404


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_background_collections_run_on_the_interval_and_export_metrics(
        fresh_dockyard: Dockyard, request: pytest.FixtureRequest, backend: str) -> None:
    fresh_dockyard.env.update({"DOCKYARD_GC_INTERVAL": "1", "DOCKYARD_GC_GRACE": "0",
                               **backend_env(request, backend)})
    d = fresh_dockyard.start()
    client = RegistryClient(d.url)
    name = unique_repo("gc")
    digest, body = client.push_image(name, "v1")
    _, kept = client.push_image(name, "v2")
    assert client.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    layer = image_digests(body)[1]
    deadline = time.monotonic() + 30
    while stored(d, layer):
        assert time.monotonic() < deadline, "no background collection deleted the layer"
        time.sleep(0.2)
    assert_pulls(client, name, "v2", kept)
    # The run's child process has deleted; its parent counts it when it exits.
    while 'dockyard_gc_runs_total{result="ok"}' not in (
            metrics := direct("GET", service_url(d, "storage") + "/metrics").data.decode()):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
    last = next(line for line in metrics.splitlines()
                if line.startswith("dockyard_gc_last_success_timestamp_seconds "))
    assert float(last.split()[1]) > time.time() - 60
    assert "dockyard_gc_reclaimed_bytes_total" in metrics


def test_repository_delete_then_gc_reclaims_it(gc_dockyard: Dockyard,
                                               gc_client: RegistryClient) -> None:
    name, other = unique_repo("gc"), unique_repo("gc")
    _, v1 = gc_client.push_image(name, "v1")
    _, v2 = gc_client.push_image(name, "v2")
    shared = image_digests(v1)[1]
    assert gc_client.request(
        "POST", f"/v2/{other}/blobs/uploads/?mount={shared}&from={name}").status == 201
    doc = json.loads(gc_client.image_manifest(other))
    doc["layers"].append(json.loads(v1)["layers"][0])
    kept = json.dumps(doc).encode()
    assert gc_client.put_manifest(other, "v1", kept).status == 201
    assert gc_client.get_manifest(name, "v1").status == 200   # in the router's cache now

    out = cli(gc_dockyard, "repo", "delete", name, "--yes")
    assert out.returncode == 0, out.stderr
    assert "deleted 2 manifests" in out.stdout
    assert gc_client.get_manifest(name, "v1").status == 404
    assert gc_client.request("GET", f"/v2/{name}/tags/list").status == 404
    _, _, catalog = gc_client.json("GET", "/v2/_catalog?n=10000")
    assert name not in catalog["repositories"]

    report = run_gc(gc_dockyard)
    gone = {*image_digests(v1), *image_digests(v2)} - {shared}
    assert gone <= deleted(report, "blob")
    assert shared not in deleted(report, "blob")
    assert_pulls(gc_client, other, "v1", kept)
    # The name can be pushed to again, from scratch.
    _, again = gc_client.push_image(name, "v1")
    assert_pulls(gc_client, name, "v1", again)


def test_repository_delete_of_an_unknown_name_is_404(gc_client: RegistryClient) -> None:
    status, _, body = gc_client.json("DELETE", f"/api/v1/repositories/{unique_repo('no')}")
    assert status == 404 and body["errors"][0]["code"] == "NAME_UNKNOWN"
    status, _, body = gc_client.json("DELETE", "/api/v1/repositories/Bad..Name")
    assert status == 400 and body["errors"][0]["code"] == "NAME_INVALID"


def test_retention_dry_run_agrees_with_what_is_then_deleted(
        gc_dockyard: Dockyard, gc_client: RegistryClient, tmp_path: Path) -> None:
    name = unique_repo("keep")
    bodies = {}
    for tag in ("v1.0", "release-1", "t0", "t1", "t2", "t3", "t4"):
        bodies[tag] = gc_client.push_image(name, tag)[1]
    # The same image under two tags: removing one of them frees nothing.
    assert gc_client.put_manifest(name, "t5", bodies["t0"]).status == 201
    config = tmp_path / "gc.yaml"
    config.write_text(json.dumps({"gc": {"retention": [
        "nomatch/* keep_last=0",
        f"{name.split('/')[0]}/* keep_last=3 keep=v*,release-*"]}}))

    def collect(*extra: str) -> dict[str, Any]:
        return run_gc(gc_dockyard, "--config", str(config), *extra)

    dry = collect("--dry-run")
    # The three newest unprotected tags are t5, t4, t3.
    assert deleted(dry, "tag") == {"t0", "t1", "t2"}
    # t0's image is t5's too: it stays.
    assert deleted(dry, "manifest") == {sha256(bodies[t]) for t in ("t1", "t2")}
    assert gc_client.get_manifest(name, "t1").status == 200   # dry: nothing changed

    real = collect()
    for kind in ("tag", "manifest", "layer-link", "blob"):
        assert {(i["repository"], i["name"]) for i in real["items"] if i["kind"] == kind} == \
            {(i["repository"], i["name"]) for i in dry["items"] if i["kind"] == kind}, kind
    assert real["bytes"] == dry["bytes"] > 0
    status, _, listed = gc_client.json("GET", f"/v2/{name}/tags/list")
    assert status == 200
    assert sorted(listed["tags"]) == ["release-1", "t3", "t4", "t5", "v1.0"]
    for tag in ("v1.0", "release-1", "t3", "t4"):
        assert_pulls(gc_client, name, tag, bodies[tag])
    assert_pulls(gc_client, name, "t5", bodies["t0"])


def test_usage_per_repository_and_registry_wide(fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.env.update({"DOCKYARD_GC_INTERVAL": "0", "DOCKYARD_GC_USAGE_MAX_AGE": "0"})
    d = fresh_dockyard.start()
    client = RegistryClient(d.url)
    a, b = "usage/a", "usage/b"
    _, body_a = client.push_image(a, "v1")
    layer = json.loads(body_a)["layers"][0]
    assert client.request("POST", f"/v2/{b}/blobs/uploads/?mount={layer['digest']}&from={a}"
                          ).status == 201
    doc = json.loads(client.image_manifest(b))
    doc["layers"].append(layer)
    body_b = json.dumps(doc).encode()
    assert client.put_manifest(b, "v1", body_b).status == 201

    def size(body: bytes) -> int:
        m = json.loads(body)
        return len(body) + sum(x["size"] for x in [m["config"], *m["layers"]])

    out = subprocess.run([str(VENV_BIN / "dockyard"), "usage", "--data-dir", str(d.data_dir),
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    usage = json.loads(out.stdout)
    repos = usage["repositories"]
    assert repos[a]["tagged_bytes"] == size(body_a)
    assert repos[b]["tagged_bytes"] == size(body_b)
    assert repos[a]["exclusive_bytes"] == size(body_a) - layer["size"]
    assert repos[b]["exclusive_bytes"] == size(body_b) - layer["size"]
    registry = usage["registry"]
    assert registry["logical_bytes"] == size(body_a) + size(body_b)
    assert registry["referenced_bytes"] == registry["logical_bytes"] - layer["size"]
    assert registry["physical_bytes"] == registry["referenced_bytes"]
    assert registry["dedup_ratio"] > 1.0

    table = subprocess.run([str(VENV_BIN / "dockyard"), "usage", "--data-dir",
                            str(d.data_dir), "--cached"], capture_output=True, text=True,
                           timeout=60)
    assert table.returncode == 0 and a in table.stdout and "dedup ratio" in table.stdout

    # The endpoint, through the router, serves the cached answer with its age...
    r = client.request("GET", "/api/v1/usage")
    assert r.status == 200 and "Age" in r.headers
    assert json.loads(r.data)["registry"] == registry
    # ... and, when it is older than gc.usage_max_age, computes it again behind it.
    orphan = client.push_blob(a, b"x" * 1000)
    deadline = time.monotonic() + 20
    # A computation already running when the push ended may have listed the links
    # before it and the blobs after it: wait for one that saw the push whole.
    while True:
        served = json.loads(client.request("GET", "/api/v1/usage").data)["registry"]
        if (served["physical_bytes"] == registry["physical_bytes"] + 1000
                and served["reclaimable_bytes"] == 0):  # linked into `a`: held
            break
        assert time.monotonic() < deadline, served
        time.sleep(0.2)
    assert client.request("DELETE", f"/v2/{a}/blobs/{orphan}").status == 202


def fsck(d: Dockyard, *args: str) -> tuple[int, list[dict[str, Any]]]:
    out = cli(d, "fsck", "--json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]


def damage(d: Dockyard, key: str, data: bytes | None) -> None:
    """Behind dockyard's back: replace the object at `key` with `data`, or remove it."""
    bucket = seaweed.bucket_of(d.env)
    if bucket is None:
        path = d.data_dir / "storage" / key
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    access, name, prefix = bucket
    if data is None:
        access.client().delete_object(Bucket=name, Key=prefix + key)
    else:
        access.client().put_object(Bucket=name, Key=prefix + key, Body=data)


def blob_key(digest: str) -> str:
    algorithm, hexpart = digest.split(":")
    return f"blobs/{algorithm}/{hexpart[:2]}/{hexpart}"


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_fsck_finds_reports_and_repairs(fresh_dockyard: Dockyard, request: pytest.FixtureRequest,
                                        backend: str) -> None:
    fresh_dockyard.env.update({"DOCKYARD_GC_INTERVAL": "0", **backend_env(request, backend)})
    d = fresh_dockyard.start()
    client = RegistryClient(d.url)
    assert fsck(d) == (0, [])
    _, body_a = client.push_image("fsck/a", "v1")
    digest_b, _ = client.push_image("fsck/b", "v1")
    digest_c, body_c = client.push_image("fsck/c", "v1")
    orphan = client.push_blob("fsck/d", b"soon gone")
    layer = json.loads(body_a)["layers"][0]
    data = client.request("GET", f"/v2/fsck/a/blobs/{layer['digest']}").data
    damage(d, blob_key(layer["digest"]), bytes(len(data)))                # bit rot
    damage(d, blob_key(digest_b), None)                                   # lost bytes
    damage(d, f"repositories/fsck/c/_manifests/{digest_c.replace(':', '/')}",
           None)                                                          # lost link
    damage(d, blob_key(orphan), None)                                     # dangling link

    code, findings = fsck(d)
    assert code == 1
    found = {(f["kind"], f["repository"], f["digest"]) for f in findings}
    assert found == {
        ("blob-corrupt", "", layer["digest"]),
        ("manifest-bytes-missing", "fsck/b", digest_b),
        ("manifest-link-missing", "fsck/c", digest_c),
        ("layer-link-dangling", "fsck/d", orphan),
    }
    assert not any(f["repaired"] for f in findings)

    code, findings = fsck(d, "--repair")
    assert code == 1   # a's layer is gone for good until it is pushed again
    assert {f["kind"] for f in findings if not f["repaired"]} == {"blob-missing"}
    assert client.get_manifest("fsck/b", "v1").status == 404
    assert_pulls(client, "fsck/c", "v1", body_c)
    assert client.request("HEAD", f"/v2/fsck/a/blobs/{layer['digest']}").status == 404

    assert client.push_blob("fsck/a", data) == layer["digest"]
    assert_pulls(client, "fsck/a", "v1", body_a)
    assert fsck(d) == (0, [])


def test_gc_on_a_terminal_shows_its_phases_then_a_summary(gc_dockyard: Dockyard,
                                                           gc_client: RegistryClient) -> None:
    """`dockyard gc` run by a person: progress redrawn in place on the terminal (phases,
    counts, bytes), the dry run's list, and a closing summary of what went."""
    import pty

    name = unique_repo("gc")
    digest, body = gc_client.push_image(name, "gone")
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202

    def on_a_terminal(*args: str) -> str:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen([str(VENV_BIN / "dockyard"), "gc", "--data-dir",
                                     str(gc_dockyard.data_dir), "--grace", "0", *args],
                                    stdin=follower, stdout=follower, stderr=follower,
                                    env={**os.environ, **gc_dockyard.env})
            os.close(follower)
            out = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            assert proc.wait(timeout=120) == 0, out
            return out.decode()
        finally:
            os.close(leader)

    dry = on_a_terminal("--dry-run")
    for phase in ("barrier", "mark", "index", "links", "blobs"):
        assert f"\r\x1b[K{phase}: " in dry, (phase, dry)
    layer = image_digests(body)[1]
    assert f"blob\t{layer}\t" in dry
    assert "would delete " in dry and " to reclaim in " in dry
    assert stored(gc_dockyard, layer)

    real = on_a_terminal()
    assert "\r\x1b[Kblobs deleted: " in real
    summary = next(line for line in real.splitlines() if line.startswith("deleted "))
    blobs = int(summary.split()[1])
    assert blobs >= len(image_digests(body)) and "reclaimed in" in summary, summary
    assert not stored(gc_dockyard, layer)


def test_gc_of_a_scaled_out_deployment_from_its_config_file(
        gc_dockyard: Dockyard, gc_client: RegistryClient, tmp_path: Path) -> None:
    """`dockyard gc --config FILE`, with no --data-dir: the storage root and the index's
    Redis come from the file, as for a deployment that `dockyard serve` did not start."""
    served = json.loads((gc_dockyard.data_dir / "serve.json").read_text())
    config = tmp_path / "deployment.yaml"
    storage: dict[str, Any] = {"root": served.get("storage_root")
                               or str(gc_dockyard.data_dir / "storage")}
    bucket = seaweed.bucket_of(gc_dockyard.env)
    if bucket is not None:
        access, name, prefix = bucket
        storage |= {"backend": "s3", "s3": access.storage_config(name, prefix)}
    config.write_text(json.dumps({"storage": storage,
                                  "index": {"redis": {"url": served["redis"]}}}))
    name = unique_repo("gc")
    digest, body = gc_client.push_image(name, "gone")
    _, kept = gc_client.push_image(name, "kept")
    assert gc_client.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    out = subprocess.run([str(VENV_BIN / "dockyard"), "gc", "--config", str(config),
                          "--grace", "0", "--json"], capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("DOCKYARD_")})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(image_digests(body)) <= deleted(report, "blob")
    assert not stored(gc_dockyard, image_digests(body)[1])
    assert_pulls(gc_client, name, "kept", kept)
