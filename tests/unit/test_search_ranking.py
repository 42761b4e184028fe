"""Search as a user meets it: ranking, several words, labels as descriptions, and
queries of any shape answered with results or a 400, never a 500.

The index app runs in-process against the session's redis-server; the labels
tests push real images through the storage app, which reads their configs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.storage.app import create_app as create_storage_app
from services.storage.blobstore import BlobStore
from tests.support.registry_client import signed_headers
from tests.unit.conftest import TEST_KEY, Api, storage_config
from tests.unit.test_index_app import put

DESCRIPTION = "org.opencontainers.image.description"
TITLE = "org.opencontainers.image.title"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def names(api: Api, query: str, **params: Any) -> list[str]:
    r = api("GET", "/v1/search?" + "&".join(
        f"{k}={quote_from_bytes(str(v).encode())}" for k, v in {"q": query, **params}.items()))
    assert r.status_code == 200, r.text
    return [x["name"] for x in r.json["results"]]


def test_ranking_puts_the_best_match_first_then_the_most_recently_pushed(
        index_api: Api) -> None:
    # Pushed so that recency alone would give the reverse order.
    for repo, description in [("other/thing", "a web thing"), ("acme/my-web-app", ""),
                              ("acme/web-old", ""), ("webapp", ""), ("acme/web", ""),
                              ("web", ""), ("zz/web-new", "")]:
        put(index_api, repo, "v1", annotations={DESCRIPTION: description} if description else {})
    assert names(index_api, "web") == [
        "web",                                 # the exact name
        "acme/web",                            # last path component
        "webapp",                              # name prefix
        "zz/web-new", "acme/web-old", "acme/my-web-app",  # substring, newest first
        "other/thing",                         # description
    ]
    assert names(index_api, "WEB") == names(index_api, "web")
    # Pushing again makes a repository the most recent of its rank.
    put(index_api, "acme/my-web-app", "v2")
    assert names(index_api, "web")[3:6] == ["acme/my-web-app", "zz/web-new", "acme/web-old"]


def test_several_words_must_all_be_found_in_name_or_description(index_api: Api) -> None:
    put(index_api, "corp/payments-api", "v1", annotations={DESCRIPTION: "Card Processing"})
    put(index_api, "corp/payments-worker", "v1", annotations={DESCRIPTION: "batch jobs"})
    put(index_api, "corp/ledger", "v1", annotations={DESCRIPTION: "payments ledger API"})
    assert names(index_api, "payments api") == ["corp/payments-api", "corp/ledger"]
    assert names(index_api, "  PAYMENTS   processing ") == ["corp/payments-api"]
    assert names(index_api, "payments nothing-like-this") == []
    # A word inside another counts once: "pay" is in "payments".
    assert names(index_api, "pay payments worker") == ["corp/payments-worker"]


def test_too_many_words_is_a_400_with_the_reason(index_api: Api) -> None:
    r = index_api("GET", "/v1/search?q=" + "+".join(chr(97 + i) * 3 for i in range(11)))
    assert r.status_code == 400
    error = r.json["errors"][0]
    assert error["code"] == "UNSUPPORTED" and "at most 10 words" in error["message"]
    assert index_api("GET", "/v1/search?q=" + "+".join(["same"] * 50)).status_code == 200


def test_labels_are_searched_and_a_label_description_is_shown(index_api: Api) -> None:
    put(index_api, "lab/one", "v1", labels={DESCRIPTION: "Made by docker build",
                                            TITLE: "Fancy Title", "vendor": "Initech"})
    put(index_api, "lab/two", "v1", annotations={DESCRIPTION: "the annotation wins"},
        labels={DESCRIPTION: "not shown", "org.example.team": "Blue Team"})
    r = index_api("GET", "/v1/search?q=lab/")
    shown = {x["name"]: x["description"] for x in r.json["results"]}
    assert shown == {"lab/one": "Made by docker build", "lab/two": "the annotation wins"}
    assert names(index_api, "initech") == ["lab/one"]
    assert names(index_api, "fancy title") == ["lab/one"]
    assert names(index_api, "blue team") == ["lab/two"]
    # A new tagged push without labels forgets them.
    put(index_api, "lab/one", "v2")
    assert names(index_api, "initech") == []


ODD_QUERIES = ["*", "**", "?", ".*", "[", "(?:", "\\", "%", "%%", "+", "^$", "|", "\x00",
               "x" * 1000, "a" * 5000, " ".join(["ab"] * 500), "é中😀", "\u0130", "\ud800"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(st.sampled_from(ODD_QUERIES), st.text(max_size=1000),
                       st.binary(max_size=300)))
def test_any_query_gets_results_or_a_400(index_api: Api, query: str | bytes) -> None:
    put(index_api, "odd/repo", "v1", annotations={DESCRIPTION: "ünïcödé * [x] .*"})
    raw = query if isinstance(query, bytes) else query.encode("utf-8", "surrogatepass")
    r = index_api("GET", "/v1/search?q=" + quote_from_bytes(raw))
    assert r.status_code in (200, 400), (query, r.status_code, r.text)
    if r.status_code == 400:
        assert r.json["errors"][0]["message"]
    else:
        assert isinstance(r.json["results"], list)


# -- labels through the storage app -----------------------------------------------------------


def _blob(api: Api, name: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = api("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=data)
    assert r.status_code == 201, r.text
    return {"digest": digest, "size": len(data)}


def _image(api: Api, name: str, labels: dict[str, str] | None,
           config_type: str = OCI_CONFIG) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": labels, "Env": ["A=" + os.urandom(4).hex()]},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": config_type, **_blob(api, name, config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                   **_blob(api, name, os.urandom(32))}]}).encode()


def _put(api: Api, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
    r = api("PUT", f"/v2/{name}/manifests/{reference}", body=body,
            headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def _search(index_url: str, query: str) -> list[tuple[str, str]]:
    # Signed, as the router signs its calls to the index (shared/service_auth.py).
    url = f"{index_url}/v1/search?{urlencode({'q': query})}"
    r = urllib3.request("GET", url, headers=signed_headers(TEST_KEY, "GET", url, {}))
    return [(x["name"], x["description"]) for x in json.loads(r.data)["results"]]


@pytest.fixture
def config_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests storage reads whole (configs, and manifests of an index's children)."""
    reads: list[str] = []
    original = BlobStore.read

    def read(self: BlobStore, digest: Any) -> bytes:
        reads.append(str(digest))
        return original(self, digest)

    monkeypatch.setattr(BlobStore, "read", read)
    return reads


def test_config_labels_of_an_image_and_of_an_index(storage_root: Path, index_url: str,
                                                   config_reads: list[str]) -> None:
    api = Api(create_storage_app(storage_config(storage_root, index_url)))
    token = os.urandom(6).hex()
    name = f"labels/img-{token}"
    body = _image(api, name, {DESCRIPTION: f"built {token}", "vendor": "Initech"})
    config_digest = json.loads(body)["config"]["digest"]
    config_reads.clear()
    _put(api, name, "v1", body)
    assert config_reads == [config_digest]  # one config read, nothing else
    assert _search(index_url, token) == [(name, f"built {token}")]
    assert _search(index_url, f"initech {token}") == [(name, f"built {token}")]

    # A multi-platform image: its children pushed by digest, which read nothing,
    # then the index, which reads one child manifest and that child's config.
    multi = f"labels/multi-{token}"
    children = []
    for arch in ("amd64", "arm64"):
        child = _image(api, multi, {DESCRIPTION: f"multi {token}", "arch": arch})
        config_reads.clear()
        digest = _put(api, multi, "sha256:" + hashlib.sha256(child).hexdigest(), child)
        assert config_reads == []
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(child),
                         "platform": {"os": "linux", "architecture": arch}})
    attestation = {**children[1], "platform": {"os": "unknown", "architecture": "unknown"}}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [attestation, *children]}).encode()
    config_reads.clear()
    _put(api, multi, "v1", index, OCI_INDEX)
    assert len(config_reads) == 2 and config_reads[0] == children[0]["digest"]
    assert _search(index_url, f"multi {token}") == [(multi, f"multi {token}")]
    assert _search(index_url, f"amd64 {token}") == [(multi, f"multi {token}")]


def test_configs_that_are_no_image_config_or_broken_give_no_labels(
        storage_root: Path, index_url: str, config_reads: list[str]) -> None:
    api = Api(create_storage_app(storage_config(storage_root, index_url)))
    token = os.urandom(6).hex()
    artifact = f"labels/artifact-{token}"
    _put(api, artifact, "v1", _image(api, artifact, {DESCRIPTION: f"hidden {token}"},
                                     config_type="application/vnd.example.thing+json"))
    broken = f"labels/broken-{token}"
    config = b'{"config": {"Labels": ' + b"[" * 100_000
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
           "config": {"mediaType": OCI_CONFIG, **_blob(api, broken, config)}}
    _put(api, broken, "v1", json.dumps(doc).encode())
    weird = f"labels/weird-{token}"
    config = json.dumps({"config": {"Labels": {"a": 1, "b": None, DESCRIPTION: ["x"]}}}).encode()
    doc["config"] = {"mediaType": OCI_CONFIG, **_blob(api, weird, config)}
    _put(api, weird, "v1", json.dumps(doc).encode())
    assert _search(index_url, f"hidden {token}") == []
    assert {n for n, _ in _search(index_url, token)} == {artifact, broken, weird}
