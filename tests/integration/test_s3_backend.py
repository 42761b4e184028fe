"""What only the S3 backend does, through a real `dockyard serve` on a real SeaweedFS:
pulls answered by a redirect to a presigned URL, and usage and fsck reading the
bucket. Garbage collection and fsck's repairs on S3 are tests/integration/test_gc.py's
`[s3]` runs.

The protocol suite itself runs on S3 through the `dockyard` parameter
(tests/integration/conftest.py); this file starts registries of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
import urllib3

from tests.support import seaweedfs as seaweed
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import RegistryClient


@pytest.fixture(scope="module")
def redirecting(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    """dockyard on S3 with ``storage.s3.redirect: true``."""
    if not seaweed.backend_available():
        pytest.skip(seaweed.NO_BACKEND)
    weed = request.getfixturevalue("seaweedfs")
    env = seaweed.dockyard_env(weed.access, seaweed.new_bucket_name("redirect"),
                               redirect=True)
    with Dockyard(tmp_path_factory.mktemp("redirecting") / "data", env=env) as server:
        yield server


def test_a_pull_is_a_redirect_to_the_object_store_and_ranges_work(
        redirecting: Dockyard) -> None:
    client = RegistryClient(redirecting.url)
    data = os.urandom(300_000)
    digest = client.push_blob("redirect/a", data)
    http = urllib3.PoolManager(retries=False)
    url = f"{redirecting.url}/v2/redirect/a/blobs/{digest}"

    r = http.request("GET", url, redirect=False)
    assert r.status == 307, (r.status, r.data[:200])
    location = r.headers["Location"]
    assert location.startswith(seaweed.bucket_of(redirecting.env)[0].endpoint)
    assert "Cache-Control" not in r.headers and "Content-Range" not in r.headers
    assert http.request("GET", location).data == data
    ranged = http.request("GET", location, headers={"Range": "bytes=1000-1999"})
    assert ranged.status == 206 and ranged.data == data[1000:2000]

    # A client that follows redirects (as docker does) gets the bytes, the Range too.
    follows = urllib3.PoolManager(retries=urllib3.Retry(total=2, connect=0, read=0, redirect=2))
    assert follows.request("GET", url).data == data
    ranged = follows.request("GET", url, headers={"Range": "bytes=5-9"})
    assert ranged.status == 206 and ranged.data == data[5:10]

    # HEAD answers from the object's metadata: no redirect, the blob's length.
    head = http.request("HEAD", url, redirect=False)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest

    # Nothing shared lives in the replica's local root: only its scratch.
    local = redirecting.data_dir / "storage"
    assert {p.name for p in local.iterdir()} <= {"gc", "tmp"}

    # A blob the repository may not serve is a 404, never a redirect.
    missing = http.request("GET", f"{redirecting.url}/v2/redirect/other/blobs/{digest}",
                           redirect=False)
    assert missing.status == 404


def dockyard_cli(d: Dockyard, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "dockyard"), *args, "--data-dir", str(d.data_dir)],
                          env={**os.environ, **d.env}, capture_output=True, text=True,
                          timeout=120)


def test_usage_and_fsck_read_the_bucket(
        redirecting: Dockyard) -> None:
    client = RegistryClient(redirecting.url)
    manifest = client.image_manifest("usage/a")
    r = client.put_manifest("usage/a", "v1", manifest)
    assert r.status == 201, (r.status, r.data)

    done = dockyard_cli(redirecting, "usage", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    repo = answer["repositories"]["usage/a"]
    assert repo["tags"] == 1 and repo["manifests"] == 1 and repo["tagged_bytes"] > 0
    assert answer["registry"]["physical_bytes"] >= repo["tagged_bytes"]
    http = urllib3.PoolManager(retries=False)
    r = http.request("GET", f"{redirecting.url}/api/v1/usage")
    assert r.status == 200 and "usage/a" in json.loads(r.data)["repositories"]

    done = dockyard_cli(redirecting, "fsck", "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)

