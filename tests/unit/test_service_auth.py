"""Service-to-service signatures (shared/service_auth.py): the storage and index apps
refuse every call that dockyard's own services did not sign, before touching anything."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import falcon.testing
import msgpack
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from services.index.app import create_app as create_index_app
from services.storage.app import create_app as create_storage_app
from shared import config
from shared.service_auth import (
    SECRET_FILE_NAME,
    ServiceKey,
    ensure_secret_file,
    key_from_config,
)
from tests.support.processes import RedisServer
from tests.unit.conftest import TEST_KEY, TEST_SECRET, Api, make_config, storage_config

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OTHER_KEY = ServiceKey("another-secret-of-enough-length")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its content (symlinks by their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = os.readlink(p).encode()
        elif p.is_file():
            out[str(p)] = p.read_bytes()
    return out


def environ(method: str, target: str, headers: dict[str, str], body: bytes = b"",
            ) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return falcon.testing.create_environ(method=method, path=path, query_string=query,
                                         headers=headers, body=body)


def signed(method: str, target: str, headers: dict[str, str] | None = None,
           body: bytes | None = None, key: ServiceKey = TEST_KEY, **kw: Any) -> dict[str, str]:
    headers = dict(headers or {})
    headers["X-Dockyard-Signature"] = key.sign(method, target, headers.items(), body, **kw)
    return headers


def error_reason(result: falcon.testing.Result) -> str:
    doc = json.loads(result.content)
    assert doc["errors"][0]["code"] == "UNAUTHORIZED"
    return doc["errors"][0]["detail"]["reason"]


# -- the key itself ------------------------------------------------------------------------


def test_a_signed_request_verifies_once() -> None:
    key = ServiceKey(TEST_SECRET)
    headers = signed("GET", "/v2/a%2Fb/tags/list?n=1&last=x%2Fy",
                     {"X-Dockyard-Accel": "file"}, key=key)
    env = environ("GET", "/v2/a%2Fb/tags/list?n=1&last=x%2Fy", headers)
    assert key.verify(env) is None
    # The same request again is a replay.
    assert key.verify(environ("GET", "/v2/a%2Fb/tags/list?n=1&last=x%2Fy",
                              headers)) == "replayed request"


# One change to a signed request, as an attacker on the network would make it.
MUTATIONS = ["method", "path", "query", "header_value", "header_added", "header_removed",
             "body", "timestamp", "secret"]


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(st.text(st.characters(codec="ascii", categories=["L", "N"],
                                            include_characters="-._~%"),
                              min_size=1, max_size=8), min_size=1, max_size=4),
    query=st.text(st.characters(codec="ascii", categories=["L", "N"],
                                include_characters="=&"), max_size=20),
    value=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1,
                  max_size=20),
    body=st.binary(min_size=1, max_size=64),
    mutation=st.sampled_from(MUTATIONS),
)
def test_any_change_to_a_signed_request_is_refused(
        segments: list[str], query: str, value: str, body: bytes, mutation: str) -> None:
    key = ServiceKey(TEST_SECRET)
    # "%" only as a valid escape, so the path means one thing.
    path = "/internal/rpc/" + "/".join(s.replace("%", "%25") for s in segments)
    target = path + (f"?{query}" if query else "")
    headers = {"X-Dockyard-Body-File": value, "Content-Type": "application/msgpack"}
    sig = signed("POST", target, headers, body, key=key)
    method, sent_target, sent_body = "POST", target, body
    if mutation == "method":
        method = "PUT"
    elif mutation == "path":
        sent_target = path + "x" + (f"?{query}" if query else "")
    elif mutation == "query":
        sent_target = path + "?" + query + "&x=1"
    elif mutation == "header_value":
        sig["X-Dockyard-Body-File"] = value + "x"
    elif mutation == "header_added":
        sig["X-Dockyard-File"] = "/etc/passwd"
    elif mutation == "header_removed":
        del sig["X-Dockyard-Body-File"]
    elif mutation == "body":
        sent_body = body + b"x"
    elif mutation == "timestamp":
        sig = signed("POST", target, headers, body, key=key, now=time.time() - 120)
    elif mutation == "secret":
        sig = signed("POST", target, headers, body, key=OTHER_KEY)
    assert key.verify(environ(method, sent_target, sig, sent_body)) is not None
    # And unchanged, it passes.
    fresh = signed("POST", target, headers, body, key=key)
    assert key.verify(environ("POST", target, fresh, body)) is None


def test_stale_and_future_timestamps_are_refused() -> None:
    key = ServiceKey(TEST_SECRET, max_skew=30)
    for skew in (-31, 31, -3600):
        headers = signed("GET", "/v2/_catalog", key=key, now=time.time() + skew)
        assert key.verify(environ("GET", "/v2/_catalog", headers)) == \
            "stale or future timestamp"
    headers = signed("GET", "/v2/_catalog", key=key, now=time.time() - 20)
    assert key.verify(environ("GET", "/v2/_catalog", headers)) is None


@pytest.mark.parametrize("value", [
    "", "v1", "v2 1 n - " + "0" * 64, "v1 abc n - " + "0" * 64, "v1 1 n -",
    "v1 1 " + "n" * 65 + " - " + "0" * 64, "v1 1 n - short", "v1  1 n - " + "0" * 64,
])
def test_malformed_signatures_are_refused(value: str) -> None:
    env = environ("GET", "/v2/_catalog", {"X-Dockyard-Signature": value})
    assert TEST_KEY.verify(env) is not None


def test_internal_calls_must_sign_their_body() -> None:
    key = ServiceKey(TEST_SECRET)

    class Stream:
        def read(self, n: int = -1) -> bytes:
            return b""

    headers = {"X-Dockyard-Signature": key.sign("POST", "/internal/rpc/put_manifest", [],
                                                Stream())}
    assert key.verify(environ("POST", "/internal/rpc/put_manifest", headers, b"\x80")) == \
        "internal calls must sign their body"


def test_the_secret_comes_from_the_config_or_its_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"^internal\.secret: not set"):
        key_from_config(config.load(None, environ={}))
    with pytest.raises(config.ConfigError, match=r"^internal\.secret: .*at least 16"):
        key_from_config(config.load(None, environ={"DOCKYARD_INTERNAL_SECRET": "short"}))
    with pytest.raises(config.ConfigError, match=r"^internal\.secret_file: cannot read"):
        key_from_config(config.load(None, environ={
            "DOCKYARD_INTERNAL_SECRET_FILE": str(tmp_path / "missing")}))

    path = ensure_secret_file(tmp_path / SECRET_FILE_NAME)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text()
    assert len(secret.strip()) == 64
    assert ensure_secret_file(path).read_text() == secret  # kept, not regenerated
    from_file = key_from_config(config.load(None, environ={
        "DOCKYARD_INTERNAL_SECRET_FILE": str(path)}))
    same = ServiceKey(secret.strip())
    assert from_file.verify(environ("GET", "/v2/_catalog",
                                    signed("GET", "/v2/_catalog", key=same))) is None
    # `_env:` works as for every other key.
    cfg = config.load(None, environ={"DOCKYARD_INTERNAL_SECRET": "_env:MY_SECRET",
                                     "MY_SECRET": "from-another-variable-0123"})
    assert cfg["internal"]["secret"] == "from-another-variable-0123"


# -- the storage app -----------------------------------------------------------------------


@pytest.fixture
def unsigned_storage(storage_root: Path, index_url: str) -> tuple[Api, Api]:
    """The storage app, seen by an outsider (unsigned) and by the router (signed)."""
    app = create_storage_app(storage_config(storage_root, index_url))
    return Api(app, signer=None), Api(app)


def test_storage_refuses_every_unsigned_call_and_writes_nothing(
        unsigned_storage: tuple[Api, Api], storage_root: Path) -> None:
    outsider, router = unsigned_storage
    data = b"layer bytes"
    digest = router("POST", f"/v2/a/b/blobs/uploads/?digest={sha256(data)}", body=data)
    assert digest.status_code == 201
    upload = router("POST", "/v2/a/b/blobs/uploads/")
    assert upload.status_code == 202
    location = upload.headers["Location"].split("://", 1)[1].split("/", 1)[1]
    # A spool file as a router would leave it in tmp/ for the hand-over.
    spool = storage_root / "tmp" / ("spool-" + "ab" * 16)
    spool.write_bytes(b"forged")
    before = files(storage_root)

    attempts = [
        ("GET", f"/v2/a/b/blobs/{sha256(data)}", {}, None),
        ("GET", f"/v2/a/b/blobs/{sha256(data)}", {"X-Dockyard-Accel": "file"}, None),
        ("HEAD", f"/v2/a/b/blobs/{sha256(data)}", {}, None),
        ("DELETE", f"/v2/a/b/blobs/{sha256(data)}", {}, None),
        ("POST", "/v2/a/b/blobs/uploads/", {}, None),
        ("POST", f"/v2/a/b/blobs/uploads/?digest={sha256(b'forged')}",
         {"X-Dockyard-Body-File": spool.name, "X-Dockyard-Body-Length": "6"}, None),
        ("PUT", f"/{location}?digest={sha256(b'forged')}",
         {"X-Dockyard-Body-File": spool.name, "X-Dockyard-Body-Length": "6"}, None),
        ("PATCH", f"/{location}", {}, b"more"),
        ("DELETE", f"/{location}", {}, None),
        ("PUT", "/v2/a/b/manifests/v1", {"Content-Type": OCI_MANIFEST}, b"{}"),
        ("GET", "/v2/a/b/manifests/v1", {"X-Dockyard-Cache-Wanted": "1"}, None),
        ("POST", "/healthz", {}, None),
    ]
    for method, path, headers, body in attempts:
        r = outsider(method, path, body=body, headers=headers)
        assert r.status_code == 401, (method, path, r.status_code)
        assert "X-Dockyard-File" not in r.headers
        if method != "HEAD":
            assert error_reason(r) == "no signature"
        # Signed with another secret: the same.
        forged = Api(outsider.client.app, signer=OTHER_KEY)(method, path, body=body,
                                                            headers=headers)
        assert forged.status_code == 401, (method, path)
    assert files(storage_root) == before

    # The router's own calls still work, the hand-over included.
    r = router("PUT", f"/{location}?digest={sha256(b'forged')}",
               headers={"X-Dockyard-Body-File": spool.name, "X-Dockyard-Body-Length": "6"})
    assert r.status_code == 201, r.text
    assert not spool.exists()


def test_a_hand_over_header_changed_after_signing_is_refused(
        unsigned_storage: tuple[Api, Api], storage_root: Path) -> None:
    _, router = unsigned_storage
    (storage_root / "tmp" / ("spool-" + "cd" * 16)).write_bytes(b"x")
    path = f"/v2/a/b/blobs/uploads/?digest={sha256(b'x')}"
    headers = signed("POST", path, {"X-Dockyard-Body-File": "spool-" + "ef" * 16,
                                    "X-Dockyard-Body-Length": "1"}, None)
    headers["X-Dockyard-Body-File"] = "spool-" + "cd" * 16
    before = files(storage_root)
    r = Api(router.client.app, signer=None)("POST", path, headers=headers)
    assert r.status_code == 401 and error_reason(r) == "bad signature"
    assert files(storage_root) == before


def test_health_and_metrics_need_no_signature(unsigned_storage: tuple[Api, Api]) -> None:
    outsider, _ = unsigned_storage
    for path in ("/healthz", "/readyz", "/metrics"):
        assert outsider("GET", path).status_code == 200, path
        assert outsider("HEAD", path).status_code != 401, path


# -- the index app -------------------------------------------------------------------------


def test_index_refuses_unsigned_rpc_and_listings_and_changes_nothing(
        redis_server: RedisServer, prefix: str) -> None:
    cfg = make_config(DOCKYARD_INDEX_REDIS_URL=redis_server.url,
                      DOCKYARD_INDEX_REDIS_KEY_PREFIX=prefix)
    app = create_index_app(cfg)
    outsider, service = Api(app, signer=None), Api(app)
    record = {"repo": "r/a", "digest": sha256(b"m"), "tag": "v1", "media_type": OCI_MANIFEST,
              "size": 10, "artifact_type": None, "annotations": {}, "subject": None,
              "refs": []}
    body = msgpack.packb(record)
    db = redis.Redis.from_url(redis_server.url)

    def keys() -> list[bytes]:
        return sorted(db.scan_iter(match=f"{prefix}*"))

    before = keys()
    for method, path, payload in [
        ("POST", "/internal/rpc/put_manifest", body),
        ("POST", "/internal/rpc/delete_tag", msgpack.packb({"repo": "r/a", "tag": "v1"})),
        ("POST", "/internal/rpc/repository_changed", msgpack.packb({"repo": "r/a"})),
        ("GET", "/v2/_catalog", None),
        ("GET", "/v2/r/a/tags/list", None),
        ("GET", f"/v2/r/a/referrers/{sha256(b'm')}", None),
        ("GET", "/v1/search?q=a", None),
    ]:
        for api in (outsider, Api(app, signer=OTHER_KEY)):
            r = api(method, path, body=payload,
                    headers={"Content-Type": "application/msgpack"})
            assert r.status_code == 401, (method, path)
    assert keys() == before

    # A signed call whose body was swapped after signing: refused, nothing written.
    headers = signed("POST", "/internal/rpc/put_manifest",
                     {"Content-Type": "application/msgpack"},
                     msgpack.packb({**record, "tag": "harmless"}))
    r = outsider("POST", "/internal/rpc/put_manifest", body=body, headers=headers)
    assert r.status_code == 401 and error_reason(r) == "body does not match"
    assert keys() == before

    r = service("POST", "/internal/rpc/put_manifest", body=body,
                headers={"Content-Type": "application/msgpack"})
    assert r.status_code == 200 and msgpack.unpackb(r.content) == {"ok": True}
    assert service("GET", "/v2/r/a/tags/list").json == {"name": "r/a", "tags": ["v1"]}


def test_changing_the_secret_in_two_rolling_steps() -> None:
    """Step 1: every process accepts NEW while signing with OLD; step 2: every process
    signs with NEW, still accepting OLD; step 3: OLD is dropped. No call is refused
    while the processes are part one step, part the next."""
    old, new = "the-old-secret-0123456789", "the-new-secret-0123456789"
    steps = [ServiceKey(old), ServiceKey(old, also_accept=[new]),
             ServiceKey(new, also_accept=[old]), ServiceKey(new)]
    for before, after in itertools.pairwise(steps):
        for signer, verifier in ((before, after), (after, before)):
            headers = signed("GET", "/v2/_catalog", key=signer)
            assert verifier.verify(environ("GET", "/v2/_catalog", headers)) is None
    headers = signed("GET", "/v2/_catalog", key=steps[0])
    assert steps[3].verify(environ("GET", "/v2/_catalog", headers)) == "bad signature"
    with pytest.raises(config.ConfigError, match=r"^internal\.also_accept: .*at least"):
        key_from_config(config.load(None, environ={
            "DOCKYARD_INTERNAL_SECRET": old, "DOCKYARD_INTERNAL_ALSO_ACCEPT": "short"}))
    cfg = config.load(None, environ={"DOCKYARD_INTERNAL_SECRET": new,
                                     "DOCKYARD_INTERNAL_ALSO_ACCEPT": old})
    headers = signed("GET", "/v2/_catalog", key=steps[0])
    assert key_from_config(cfg).verify(environ("GET", "/v2/_catalog", headers)) is None
