"""OCI distribution API operations, each checking the response the spec requires."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from bench.client import Client, ProtocolError, Response
from bench.payloads import MANIFEST_ACCEPT, OCI_MANIFEST, Blob

OCTET = {"Content-Type": "application/octet-stream"}


def _with_digest(path: str, digest: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}digest={digest}"


def _location(client: Client, resp: Response) -> str:
    return client.path_of(resp.expect_header("Location"))


def start_upload(client: Client, repo: str) -> str:
    """POST a new upload session; returns the upload path to continue at."""
    resp = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"", expect=202)
    return _location(client, resp)


def finish_upload(client: Client, path: str, digest: str, body: bytes | memoryview = b"") -> None:
    """PUT ?digest= (optionally with the last bytes) and check the committed digest."""
    hdrs = dict(OCTET) if len(body) else {}
    resp = client.request("PUT", _with_digest(path, digest), body, hdrs, expect=201)
    resp.expect_header("Docker-Content-Digest", digest)
    resp.expect_header("Location")


def push_monolithic(client: Client, repo: str, blob: Blob) -> None:
    """POST, then one PUT carrying the whole blob."""
    path = start_upload(client, repo)
    finish_upload(client, path, blob.digest, memoryview(blob.data))


def push_chunked(client: Client, repo: str, blob: Blob, chunks: int) -> None:
    """POST, ``chunks`` PATCHes with Content-Range/Content-Length, then an empty PUT."""
    path = start_upload(client, repo)
    view = memoryview(blob.data)
    step = -(-blob.size // chunks)
    for start in range(0, blob.size, step):
        part = view[start : start + step]
        end = start + len(part) - 1
        hdrs = {**OCTET, "Content-Range": f"{start}-{end}", "Content-Length": str(len(part))}
        resp = client.request("PATCH", path, part, hdrs, expect=202)
        resp.expect_header("Range", f"0-{end}")
        path = _location(client, resp)
    finish_upload(client, path, blob.digest)


def push_streamed(client: Client, repo: str, blob: Blob, piece: int = 32 << 10) -> None:
    """What the docker CLI does: one PATCH with a chunked-encoded body, then an empty PUT.

    Chunks of 32 KiB, as docker sends them (Go's net/http writes one chunk per
    write of io.Copy's 32 KiB buffer)."""
    path = start_upload(client, repo)
    view = memoryview(blob.data)

    def pieces() -> Iterator[memoryview]:
        for start in range(0, blob.size, piece):
            yield view[start : start + piece]

    hdrs = {**OCTET, "Transfer-Encoding": "chunked"}
    resp = client.request("PATCH", path, pieces(), hdrs, expect=202)
    resp.expect_header("Range", f"0-{blob.size - 1}")
    finish_upload(client, _location(client, resp), blob.digest)


def push_small(client: Client, repo: str, blob: Blob) -> None:
    """POST + PUT: the one monolithic form both registries support (the
    reference ignores ``POST ?digest=`` and opens a session instead)."""
    push_monolithic(client, repo, blob)


def pull_into(client: Client, repo: str, digest: str, size: int, buf: bytearray) -> int:
    """GET a blob into ``buf`` (no hashing here: the caller verifies after the clock stops)."""
    path = f"/v2/{repo}/blobs/{digest}"
    resp = client.send("GET", path)
    headers = {k.lower(): v for k, v in resp.getheaders()}
    if resp.status != 200:
        body = resp.read()
        raise ProtocolError(
            f"status {resp.status}, expected 200",
            method="GET",
            url=client.base_url + path,
            status=resp.status,
            response_headers=headers,
            response_body=body,
        )
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = resp.readinto(view[got : got + (4 << 20)])
        if not n:
            break
        got += n
    extra = resp.read(1)  # the body must end exactly at ``size``
    if resp.will_close:
        client.close()

    def fail(msg: str) -> ProtocolError:
        return ProtocolError(
            msg,
            method="GET",
            url=client.base_url + path,
            status=resp.status,
            response_headers=headers,
        )

    if headers.get("docker-content-digest") != digest:
        raise fail(
            f"Docker-Content-Digest is {headers.get('docker-content-digest')!r}, expected {digest}"
        )
    if headers.get("content-length") not in (None, str(size)):
        raise fail(f"Content-Length is {headers.get('content-length')}, expected {size}")
    if got != size or extra:
        raise fail(f"body is {got + len(extra)}+ bytes, expected {size}")
    return got


def verify_pulled(buf: bytearray, digest: str, url: str) -> None:
    actual = "sha256:" + hashlib.sha256(buf).hexdigest()
    if actual != digest:
        raise ProtocolError(
            f"pulled bytes hash to {actual}, expected {digest}", method="GET", url=url
        )


def mount(client: Client, repo: str, source: str, blob: Blob) -> bool:
    """Cross-repo mount. Returns False when the registry declined (202), in
    which case the spec-compliant fallback (finishing the upload) is done."""
    resp = client.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/?mount={blob.digest}&from={source}",
        b"",
        expect=(201, 202),
    )
    if resp.status == 201:
        resp.expect_header("Location")
        return True
    finish_upload(client, _location(client, resp), blob.digest, blob.data)
    return False


def ensure_blob(client: Client, repo: str, blob: Blob) -> None:
    """Upload ``blob`` unless the registry already has it in ``repo``."""
    resp = client.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}", expect=(200, 404))
    if resp.status == 404:
        push_monolithic(client, repo, blob)


def put_manifest(client: Client, repo: str, ref: str, body: bytes, digest: str) -> None:
    resp = client.request(
        "PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": OCI_MANIFEST}, expect=201
    )
    resp.expect_header("Docker-Content-Digest", digest)
    resp.expect_header("Location")


def get_manifest(client: Client, repo: str, ref: str, digest: str) -> None:
    resp = client.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    resp.expect_header("Docker-Content-Digest", digest)
    resp.expect_header("Content-Type", OCI_MANIFEST)
    if "sha256:" + hashlib.sha256(resp.body).hexdigest() != digest:
        raise resp.fail(f"manifest body does not hash to {digest}")


def head_manifest(client: Client, repo: str, ref: str, digest: str, size: int) -> None:
    resp = client.request(
        "HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}
    )
    resp.expect_header("Docker-Content-Digest", digest)
    resp.expect_header("Content-Length", str(size))


def _json(resp: Response) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError as exc:
        raise resp.fail(f"body is not JSON: {exc}") from exc


def list_tags(client: Client, repo: str, page_size: int | None, notes: set[str]) -> list[str]:
    """All tags of ``repo``, following ``Link: rel="next"`` when paginating.

    A registry that ignores ``n`` and returns everything at once is recorded
    in ``notes`` (the reference does: distribution 2.8 has no tag pagination),
    not treated as an error: the client still gets the right answer.
    """
    path: str | None = f"/v2/{repo}/tags/list" + (f"?n={page_size}" if page_size else "")
    tags: list[str] = []
    pages = 0
    while path is not None:
        pages += 1
        if pages > 10_000:
            raise ProtocolError(f"tags pagination of {repo} does not terminate")
        resp = client.request("GET", path)
        doc = _json(resp)
        if (
            not isinstance(doc, dict)
            or doc.get("name") != repo
            or not isinstance(doc.get("tags"), list)
        ):
            raise resp.fail(f"tags list is not {{name: {repo!r}, tags: [...]}}")
        page = doc["tags"]
        if page_size and len(page) > page_size:
            notes.add(f"ignores n={page_size} (returned {len(page)} tags in one page)")
        tags.extend(page)
        link = resp.next_link()
        path = client.path_of(link) if link else None
    if page_size and pages > 1 and tags != sorted(tags):
        raise ProtocolError(f"paginated tags of {repo} are not in lexical order")
    return tags


def catalog(client: Client, notes: set[str]) -> list[str]:
    """All repositories, following ``Link: rel="next"`` if the registry paginates."""
    path: str | None = "/v2/_catalog"
    repos: list[str] = []
    pages = 0
    while path is not None:
        pages += 1
        if pages > 10_000:
            raise ProtocolError("catalog pagination does not terminate")
        resp = client.request("GET", path)
        doc = _json(resp)
        if not isinstance(doc, dict) or not isinstance(doc.get("repositories"), list):
            raise resp.fail("catalog is not {repositories: [...]}")
        repos.extend(doc["repositories"])
        link = resp.next_link()
        path = client.path_of(link) if link else None
    if pages > 1:
        notes.add(f"paginated by default ({pages} pages)")
    return repos
