"""The index app in-process against a real redis-server: its RPC methods, listings,
referrers, search, and its answers while Redis is down."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import msgpack

from services.index.app import create_app
from tests.unit.conftest import Api, make_config

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest() -> str:
    return "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest()


def rpc(api: Api, method: str, **args: Any) -> Any:
    r = api("POST", f"/internal/rpc/{method}", body=msgpack.packb(args),
            headers={"Content-Type": "application/msgpack"})
    assert r.status_code == 200, r.text
    return msgpack.unpackb(r.content)


def put(api: Api, repo: str, tag: str | None = None, **meta: Any) -> str:
    d = meta.pop("digest", None) or digest()
    record = {"repo": repo, "digest": d, "tag": tag, "media_type": OCI_MANIFEST, "size": 10,
              "artifact_type": None, "annotations": {}, "subject": None, "refs": [], **meta}
    assert rpc(api, "put_manifest", **record) == {"ok": True}
    return d


def test_resolve_tag_and_errors(index_api: Api) -> None:
    d = put(index_api, "r/a", "v1")
    assert rpc(index_api, "resolve_tag", repo="r/a", tag="v1") == {"digest": d}
    assert rpc(index_api, "resolve_tag", repo="r/a", tag="v2") == {"error": "MANIFEST_UNKNOWN"}
    assert rpc(index_api, "resolve_tag", repo="r/b", tag="v1") == {"error": "NAME_UNKNOWN"}


def test_put_manifests_records_each_like_put_manifest(index_api: Api) -> None:
    base = {"media_type": OCI_MANIFEST, "size": 10, "artifact_type": None,
            "annotations": {}, "subject": None, "refs": []}
    subject = put(index_api, "r/batch", "base")
    records = [{**base, "repo": "r/batch", "digest": digest(), "tag": f"t{i}"} for i in range(5)]
    # The same tag twice in one batch: the later record wins, as two calls in that order.
    records.append({**records[0], "digest": digest()})
    records.append({**base, "repo": "r/batch", "digest": digest(), "tag": None,
                    "subject": subject, "artifact_type": "application/x.sig"})
    records.append({**base, "repo": "r/batch-new", "digest": digest(), "tag": "only"})
    assert rpc(index_api, "put_manifests", records=records) == {"ok": len(records)}

    tags = index_api("GET", "/v2/r/batch/tags/list").json["tags"]
    assert tags == ["base", "t0", "t1", "t2", "t3", "t4"]
    assert rpc(index_api, "resolve_tag", repo="r/batch", tag="t0") == {
        "digest": records[5]["digest"]}
    assert rpc(index_api, "resolve_tag", repo="r/batch", tag="t3") == {
        "digest": records[3]["digest"]}
    referrers = index_api("GET", f"/v2/r/batch/referrers/{subject}").json["manifests"]
    assert [m["digest"] for m in referrers] == [records[6]["digest"]]
    assert "r/batch-new" in index_api("GET", "/v2/_catalog").json["repositories"]


def test_rpc_refuses_unknown_methods_and_bad_bodies(index_api: Api) -> None:
    assert index_api("POST", "/internal/rpc/flushall", body=msgpack.packb({})).status_code == 404
    assert index_api("POST", "/internal/rpc/resolve_tag", body=b"\xc1").status_code == 400
    assert index_api("POST", "/internal/rpc/resolve_tag",
                     body=msgpack.packb([1])).status_code == 400


def test_tags_pages(index_api: Api) -> None:
    for tag in ("c", "a", "b", "d"):
        put(index_api, "r/tags", tag)
    r = index_api("GET", "/v2/r/tags/tags/list?n=2",
                  headers={"X-Forwarded-Host": "reg.example", "X-Forwarded-Proto": "https"})
    assert r.json == {"name": "r/tags", "tags": ["a", "b"]}
    assert r.headers["Link"] == '<https://reg.example/v2/r/tags/tags/list?n=2&last=b>; rel="next"'
    r = index_api("GET", "/v2/r/tags/tags/list?n=2&last=b")
    assert r.json["tags"] == ["c", "d"]
    assert "Link" not in r.headers
    assert index_api("GET", "/v2/r/none/tags/list").status_code == 404
    assert index_api("GET", "/v2/r/tags/tags/list?n=²").status_code == 400


def test_delete_tag_and_manifest(index_api: Api) -> None:
    d = put(index_api, "r/del", "a")
    put(index_api, "r/del", "b", digest=d)
    assert rpc(index_api, "delete_tag", repo="r/del", tag="a") == {"deleted": True}
    assert rpc(index_api, "delete_tag", repo="r/del", tag="a") == {"deleted": False}
    assert rpc(index_api, "delete_manifest", repo="r/del", digest=d) == {"tags_removed": 1}
    assert index_api("GET", "/v2/r/del/tags/list").json["tags"] == []


def test_referrers_and_filter(index_api: Api) -> None:
    subject = put(index_api, "r/ref", "v1")
    sig = put(index_api, "r/ref", subject=subject, artifact_type="application/x-sig",
              annotations={"k": "v"})
    put(index_api, "r/ref", subject=subject, artifact_type="application/x-sbom")
    r = index_api("GET", f"/v2/r/ref/referrers/{subject}?artifactType=application/x-sig")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert r.json == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sig, "size": 10,
         "artifactType": "application/x-sig", "annotations": {"k": "v"}}]}
    assert len(index_api("GET", f"/v2/r/ref/referrers/{subject}").json["manifests"]) == 2
    # The subject's referrer set forgets a deleted referrer.
    rpc(index_api, "delete_manifest", repo="r/ref", digest=sig)
    assert len(index_api("GET", f"/v2/r/ref/referrers/{subject}").json["manifests"]) == 1


def test_search_and_its_parameters(index_api: Api) -> None:
    put(index_api, "lib/Alpha-one", "v1")
    put(index_api, "lib/beta", "v1",
        annotations={"org.opencontainers.image.description": "The ALPHA release"})
    body = index_api("GET", "/v1/search?q=alpha").json
    assert [r["name"] for r in body["results"]] == ["lib/Alpha-one", "lib/beta"]
    assert body["results"][1]["description"] == "The ALPHA release"
    # A page size that is not a plain number falls back to the default.
    for n in ("²", "x", "", "1e3"):
        assert index_api("GET", f"/v1/search?q=alpha&n={n}").json["page_size"] == 25, n
    assert index_api("GET", "/v1/search?q=a.*").json["num_results"] == 0


def test_while_redis_is_down(prefix: str, dead_url: str) -> None:
    port = dead_url.rsplit(":", 1)[1]
    api = Api(create_app(make_config(DOCKYARD_INDEX_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                                     DOCKYARD_INDEX_REDIS_KEY_PREFIX=prefix)))
    r = api("GET", "/readyz")
    assert (r.status_code, r.json["redis"]) == (503, "down")
    assert api("GET", "/healthz").status_code == 200
    for method, path, body in (("GET", "/v2/r/x/tags/list", None),
                               ("GET", "/v2/_catalog", None),
                               ("GET", "/v1/search?q=x", None),
                               ("POST", "/internal/rpc/resolve_tag",
                                msgpack.packb({"repo": "r/x", "tag": "v1"}))):
        r = api(method, path, body=body)
        assert r.status_code == 503, path
        assert r.headers["Retry-After"] == "2"
        assert r.json["errors"][0]["code"] == "UNAVAILABLE"


def test_referrers_artifact_type_falls_back_to_the_config_type_also_for_old_records(
        index_api: Api) -> None:
    """Records written before the config's mediaType was stored have neither field; the
    image config type of the manifest's kind is what they carried (see manifest_format)."""
    subject = put(index_api, "r/refs-old", "v1")
    docker = "application/vnd.docker.distribution.manifest.v2+json"
    old_oci = put(index_api, "r/refs-old", subject=subject)
    old_docker = put(index_api, "r/refs-old", subject=subject, media_type=docker)
    new = put(index_api, "r/refs-old", subject=subject,
              config_media_type="application/vnd.example.cfg+json")
    typed = put(index_api, "r/refs-old", subject=subject, artifact_type="application/x.sig",
                config_media_type="application/vnd.oci.image.config.v1+json")
    kinds = {m["digest"]: m["artifactType"] for m in
             index_api("GET", f"/v2/r/refs-old/referrers/{subject}").json["manifests"]}
    assert kinds == {old_oci: "application/vnd.oci.image.config.v1+json",
                     old_docker: "application/vnd.docker.container.image.v1+json",
                     new: "application/vnd.example.cfg+json", typed: "application/x.sig"}
    r = index_api("GET", f"/v2/r/refs-old/referrers/{subject}"
                         "?artifactType=application/vnd.oci.image.config.v1%2Bjson")
    assert [m["digest"] for m in r.json["manifests"]] == [old_oci]
