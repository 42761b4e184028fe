"""Names, digests and upload ids built to escape the storage root.

Paths are sent raw (http.client, or a bare socket for bytes http.client will
not send) so nothing on the client side normalises `..` or decodes `%2F`.
Each one must be refused with the spec's error code, never a 500, and nothing
may appear outside the storage root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    Raw,
    assert_no_internal_errors,
    assert_oci_error,
    raw_bytes_request,
    raw_request,
    storage_root,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"
UUID = "0" * 32
LONG = "a" * 10_000
NOT_FOUND = {"NOT_FOUND", "NAME_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN",
             "BLOB_UPLOAD_UNKNOWN"}

# Escaping names: every route that takes a name.
BAD_NAMES = [
    "..", "../..", "../../../../etc", "a/../../..", "a/../../../escape",
    "%2e%2e", "%2e%2e/%2e%2e/escape", "a%2F..%2F..%2F..%2Fescape", "..%2F..%2Fescape",
    "a%00b", "%00", "a/%00/b", "a%2500", "_layers", "a/_uploads", "a/_manifests/x",
    "./a", "a/./b", "a//b", "/a", "A", "a%20b", "%ff", "a%c0%ae%c0%ae",
    LONG, "a/" * 5000 + "a",
]
NAME_ROUTES = [
    ("POST", "/v2/{}/blobs/uploads/"),
    ("POST", "/v2/{}/blobs/uploads/?digest=" + DIGEST),
    ("GET", "/v2/{}/blobs/" + DIGEST),
    ("HEAD", "/v2/{}/blobs/" + DIGEST),
    ("DELETE", "/v2/{}/blobs/" + DIGEST),
    ("GET", "/v2/{}/blobs/uploads/" + UUID),
    ("PATCH", "/v2/{}/blobs/uploads/" + UUID),
    ("PUT", "/v2/{}/blobs/uploads/" + UUID + "?digest=" + DIGEST),
    ("PUT", "/v2/{}/manifests/latest"),
    ("GET", "/v2/{}/manifests/latest"),
    ("DELETE", "/v2/{}/manifests/latest"),
    ("GET", "/v2/{}/tags/list"),
    ("GET", "/v2/{}/referrers/" + DIGEST),
]
NAME_CODES = {"NAME_INVALID"} | NOT_FOUND

BAD_DIGESTS = [
    "sha256:..", "sha256:../../../escape", "sha256:..%2F..%2Fescape", "sha256%3A%2e%2e",
    "..", "%2e%2e", f"sha256:{HEX}%00", f"sha256:{HEX[:-2]}%00a", f"sha256:{'a' * 10_000}",
    f"sha256:{HEX.upper()}", f"md5:{HEX}", f"sha256:{HEX}/..", "sha256:%2F" + HEX[3:],
    f"SHA256:{HEX}", "sha256:" + "/" * 64, LONG,
]
DIGEST_CODES = {"DIGEST_INVALID"} | NOT_FOUND

BAD_UPLOAD_IDS = [
    "..", "%2e%2e", "..%2F..%2Fescape", "..%2F..%2Fblobs", UUID[:-2] + "%00", UUID + "%00",
    UUID.upper(), UUID + "0", LONG, "%2F" + UUID, UUID + "%2F..",
]
UPLOAD_CODES = {"BLOB_UPLOAD_UNKNOWN"} | NOT_FOUND


def snapshot(directory: Path, skip: set[Path]) -> set[str]:
    """Every path under `directory` except the subtrees in `skip` (which may change)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        here = Path(dirpath)
        dirnames[:] = [n for n in dirnames if here / n not in skip]
        out.update(str((here / n).relative_to(directory)) for n in dirnames + filenames
                   if here / n not in skip)
    return out


@pytest.fixture(scope="module")
def target(module_dockyard: Dockyard) -> Dockyard:
    # A repository with real content, so a traversal into it would have something to find.
    RegistryClient(module_dockyard.url).push_image("victim/repo", "latest")
    return module_dockyard


def check(resp: Raw, codes: set[str], what: str) -> None:
    assert resp.status < 500, (what, resp.status, resp.body[:300])
    assert resp.status >= 400, (what, resp.status)
    if resp.body:  # HEAD answers carry no body
        assert_oci_error(resp.body, codes, secrets=["/tmp/", "dockyard-data"])


def test_escaping_input_is_refused_and_writes_nothing_outside(target: Dockyard) -> None:
    d = target
    root = storage_root(d)
    client = RegistryClient(d.url)
    location = client.start_upload("victim/repo")
    real_id = location.rsplit("/", 1)[-1]
    # The storage root's parent holds the data dir (redis/, the log next to it): nothing
    # new may appear there or above it, whatever the requests below do.
    outside = d.data_dir.parent
    skip = {root, d.data_dir / "redis"}
    before = snapshot(outside, skip)
    root_entries = sorted(p.name for p in root.iterdir())
    repos_before = snapshot(root / "repositories", set())

    for name in BAD_NAMES:
        for method, template in NAME_ROUTES:
            path = template.format(name)
            body = b'{"schemaVersion": 2}' if method in ("PUT", "PATCH") else b""
            check(raw_request(d.url, method, path, body), NAME_CODES, f"{method} {path[:80]}")
    for digest in BAD_DIGESTS:
        for method, path in [
            ("GET", f"/v2/victim/repo/blobs/{digest}"),
            ("HEAD", f"/v2/victim/repo/blobs/{digest}"),
            ("DELETE", f"/v2/victim/repo/blobs/{digest}"),
            ("GET", f"/v2/victim/repo/manifests/{digest}"),
            ("PUT", f"/v2/victim/repo/manifests/{digest}"),
            ("DELETE", f"/v2/victim/repo/manifests/{digest}"),
            ("GET", f"/v2/victim/repo/referrers/{digest}"),
            ("POST", f"/v2/victim/repo/blobs/uploads/?digest={digest}"),
            ("POST", f"/v2/victim/repo/blobs/uploads/?mount={digest}&from=victim/repo"),
        ]:
            body = b"x" if method in ("PUT", "POST") else b""
            check(raw_request(d.url, method, path, body), DIGEST_CODES | {"MANIFEST_INVALID"},
                  f"{method} {path[:80]}")
    for upload_id in BAD_UPLOAD_IDS:
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            path = f"/v2/victim/repo/blobs/uploads/{upload_id}"
            if method == "PUT":
                path += f"?digest={DIGEST}"
            body = b"x" if method in ("PATCH", "PUT") else b""
            check(raw_request(d.url, method, path, body), UPLOAD_CODES, f"{method} {path[:80]}")
    # A real session reached through another repository's name is unknown there.
    for name in ("other/repo", "victim/repo/..", "victim"):
        check(raw_request(d.url, "GET", f"/v2/{name}/blobs/uploads/{real_id}"),
              UPLOAD_CODES | {"NAME_INVALID"}, name)
    # mount's `from` is a name too.
    for source in ("..%2F..%2Fescape", "../victim/repo", "%2e%2e", LONG):
        check(raw_request(d.url, "POST", f"/v2/victim/repo/blobs/uploads/?mount={DIGEST}"
                          f"&from={source}", b""), {"NAME_INVALID"}, source)
    # Bytes http.client refuses to send: a bare NUL and raw dots in the request line.
    for target_path in (b"/v2/a\x00b/blobs/uploads/", b"/v2/../../escape/blobs/uploads/",
                        b"/v2/victim/repo/blobs/uploads/\x00"):
        resp = raw_bytes_request(d.url, b"POST " + target_path + b" HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        assert 400 <= resp.status < 500, (target_path, resp.status)

    assert client.request("DELETE", location).status == 204
    assert snapshot(outside, skip) == before
    assert sorted(p.name for p in root.iterdir()) == root_entries
    # No repository directory was created by any of the refused names.
    # (The test's own session, cancelled above, is the one expected change.)
    assert snapshot(root / "repositories", set()) == repos_before - {
        f"victim/repo/_uploads/{real_id}"}
    assert_no_internal_errors(d)
