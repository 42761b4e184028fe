"""The router's response cache, through :5000 on the session's real processes.

Repeats are answered by the router alone; every write through the router is
seen at once by the next read; a change made elsewhere is seen within the
moment it takes an index event to arrive; content negotiation, conditional
and partial requests and per-request headers are never confused by it.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import falcon.testing
import pytest
import redis
import urllib3

from services.router.app import create_app as create_router_app
from services.router.response_cache import ResponseCache
from shared import config, events
from shared.event_cache import EventCache
from shared.observability import Metrics
from shared.rpc import RpcClient
from tests.integration.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    direct,
    router_metrics_url,
    service_url,
    unique_repo,
    wait_until,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256

ARTIFACT = "application/vnd.example.sbom.v1+json"
_ACCESS = re.compile(r"\b(router|storage|index)\[\d+\] dockyard\.access: "
                     r"(\S+) (\S+) (\d{3}) \d+ \S+ id=(\w+)")
_LOOKUP = re.compile(r'^dockyard_router_cache_lookups_total\{result="(\w+)"\} (\S+)$', re.M)


# -- observing the processes -----------------------------------------------------


def access_lines(dockyard: Dockyard) -> list[tuple[str, str, str, str, str]]:
    """(service, method, path, status, request id) of every access line so far."""
    return _ACCESS.findall(dockyard.log_text())


def wait_logged(dockyard: Dockyard, request_id: str) -> None:
    """Until the router's access line of `request_id` is written: it is the last of a request's
    lines (a backend's line is written before the router has finished sending)."""
    wait_until(lambda: any(s == "router" and rid == request_id
                           for s, _, _, _, rid in access_lines(dockyard)),
               timeout=5.0, interval=0.02, what=f"access line of {request_id}")


def backend_reads(dockyard: Dockyard, fragment: str) -> int:
    """GETs and HEADs storage or index served whose path contains `fragment`."""
    return sum(1 for service, method, path, _, _ in access_lines(dockyard)
               if service != "router" and method in ("GET", "HEAD") and fragment in path)


def lookups(dockyard: Dockyard) -> dict[str, float]:
    text = direct("GET", router_metrics_url(dockyard)).data.decode()
    counts = {"hit": 0.0, "miss": 0.0, "bypass": 0.0}
    counts.update({result: float(value) for result, value in _LOOKUP.findall(text)})
    return counts


def index_rpc(dockyard: Dockyard) -> RpcClient:
    return RpcClient([service_url(dockyard, "index")], signer=dockyard.service_key())


def record(repo: str, digest: str, size: int, tag: str | None) -> dict[str, Any]:
    """put_manifest's arguments, as storage sends them for a plain image manifest."""
    return {"repo": repo, "digest": digest, "tag": tag, "media_type": OCI_MANIFEST,
            "size": size, "artifact_type": None, "annotations": {}, "subject": None,
            "refs": []}


def digest_of(r: urllib3.BaseHTTPResponse) -> str | None:
    return r.headers.get("Docker-Content-Digest")


def tags(client: RegistryClient, repo: str) -> list[str]:
    r = client.request("GET", f"/v2/{repo}/tags/list")
    assert r.status == 200, (r.status, r.data)
    return json.loads(r.data)["tags"]


def get_json(client: RegistryClient, url: str, **kw: Any) -> Any:
    r = client.request("GET", url, **kw)
    assert r.status == 200, (url, r.status, r.data)
    return json.loads(r.data)


def push_by_digest(client: RegistryClient, repo: str, body: bytes,
                   media_type: str = OCI_MANIFEST) -> str:
    r = client.put_manifest(repo, sha256(body), body, media_type)
    assert r.status == 201, (r.status, r.data)
    assert digest_of(r) == sha256(body)
    return sha256(body)


@pytest.fixture(autouse=True)
def cache_is_live(dockyard: Dockyard, client: RegistryClient) -> None:
    """Every test here needs the router subscribed to index events (it is, unless a
    restart is still reconnecting): a repeated tags list must become a hit."""
    repo = unique_repo("rc-live")
    client.push_image(repo, "probe")

    def hit() -> bool:
        before = lookups(dockyard)["hit"]
        tags(client, repo)
        return lookups(dockyard)["hit"] > before

    wait_until(hit, timeout=10.0, interval=0.1, what="the response cache turned on")


# -- served by the router alone ------------------------------------------------------


def test_repeated_get_by_tag_and_tags_list_are_answered_by_the_router_alone(
        dockyard: Dockyard, client: RegistryClient) -> None:
    repo = unique_repo("rc")
    digest, body = client.push_image(repo, "v1")
    client.push_image(repo, "v2")
    first = client.get_manifest(repo, "v1")
    assert first.status == 200 and digest_of(first) == digest
    assert tags(client, repo) == ["v1", "v2"]
    wait_logged(dockyard, client.get_manifest(repo, "v1").headers["X-Request-Id"])
    backend = backend_reads(dockyard, f"/{repo}/")
    before = lookups(dockyard)

    ids = []
    for _ in range(5):
        r = client.get_manifest(repo, "v1")
        assert r.status == 200
        assert r.data == body
        assert digest_of(r) == digest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Content-Length"] == str(len(body))
        ids.append(r.headers["X-Request-Id"])
        t = client.request("GET", f"/v2/{repo}/tags/list")
        assert t.status == 200
        assert json.loads(t.data) == {"name": repo, "tags": ["v1", "v2"]}
        assert t.headers["Content-Type"] == "application/json"
        ids.append(t.headers["X-Request-Id"])
    wait_logged(dockyard, ids[-1])

    after = lookups(dockyard)
    assert after["hit"] >= before["hit"] + 10
    assert after["miss"] == before["miss"]
    assert backend_reads(dockyard, f"/{repo}/") == backend
    lines = access_lines(dockyard)
    for request_id in ids:
        served_by = [s for s, _, _, _, rid in lines if rid == request_id]
        assert served_by == ["router"], (request_id, served_by)


def test_head_that_misses_fills_the_cache_for_the_get(dockyard: Dockyard,
                                                      client: RegistryClient) -> None:
    repo = unique_repo("rc")
    digest, body = client.push_image(repo, "v1")
    accept = {"Accept": OCI_MANIFEST}
    before = lookups(dockyard)

    head = client.request("HEAD", f"/v2/{repo}/manifests/v1", headers=accept)
    assert head.status == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == str(len(body))
    assert digest_of(head) == digest
    assert head.headers["Content-Type"] == OCI_MANIFEST
    wait_logged(dockyard, head.headers["X-Request-Id"])
    # Asked of storage as a GET, once.
    assert backend_reads(dockyard, f"/{repo}/manifests/v1") == 1
    assert lookups(dockyard)["miss"] == before["miss"] + 1

    get = client.request("GET", f"/v2/{repo}/manifests/v1", headers=accept)
    assert get.status == 200
    assert get.data == body
    assert digest_of(get) == digest
    assert get.headers["Content-Length"] == str(len(body))
    again = client.request("HEAD", f"/v2/{repo}/manifests/v1", headers=accept)
    assert again.status == 200 and again.data == b""
    assert again.headers["Content-Length"] == str(len(body))
    assert digest_of(again) == digest
    wait_logged(dockyard, again.headers["X-Request-Id"])

    assert backend_reads(dockyard, f"/{repo}/manifests/v1") == 1
    after = lookups(dockyard)
    assert after["hit"] == before["hit"] + 2
    assert after["miss"] == before["miss"] + 1


# -- read-your-writes through the router ---------------------------------------------


def test_push_of_a_new_tag_is_seen_at_once(dockyard: Dockyard,
                                           client: RegistryClient) -> None:
    repo = unique_repo("rc")
    old, _ = client.push_image(repo, "v1")
    for _ in range(2):
        assert tags(client, repo) == ["v1"]
        assert digest_of(client.get_manifest(repo, "v1")) == old
        assert client.get_manifest(repo, "v2").status == 404
    hits = lookups(dockyard)["hit"]
    assert tags(client, repo) == ["v1"]
    assert lookups(dockyard)["hit"] == hits + 1  # the list really was cached

    new, body = client.push_image(repo, "v2")
    assert tags(client, repo) == ["v1", "v2"]
    r = client.get_manifest(repo, "v2")
    assert r.status == 200 and digest_of(r) == new and r.data == body

    # A tag moved through the router, too.
    moved, moved_body = client.push_image(repo, "v1")
    r = client.get_manifest(repo, "v1")
    assert digest_of(r) == moved and r.data == moved_body
    assert moved != old
    assert tags(client, repo) == ["v1", "v2"]


def test_delete_of_a_tag_is_seen_at_once(dockyard: Dockyard, client: RegistryClient) -> None:
    repo = unique_repo("rc")
    digest, _ = client.push_image(repo, "gone")
    client.push_image(repo, "kept")
    for _ in range(2):
        assert client.get_manifest(repo, "gone").status == 200
        assert client.request("HEAD", f"/v2/{repo}/manifests/gone").status == 200
        assert tags(client, repo) == ["gone", "kept"]

    assert client.request("DELETE", f"/v2/{repo}/manifests/gone").status == 202
    assert client.get_manifest(repo, "gone").status == 404
    assert client.request("HEAD", f"/v2/{repo}/manifests/gone").status == 404
    assert tags(client, repo) == ["kept"]
    # The manifest itself is still there by digest.
    assert digest_of(client.get_manifest(repo, digest)) == digest


def test_delete_of_a_manifest_by_digest_is_seen_at_once(dockyard: Dockyard,
                                                        client: RegistryClient) -> None:
    repo = unique_repo("rc")
    digest, body = client.push_image(repo, "v1")
    client.push_image(repo, "other")
    for _ in range(2):
        r = client.get_manifest(repo, digest)
        assert r.status == 200 and r.data == body
        assert client.get_manifest(repo, "v1").status == 200
        assert client.request("HEAD", f"/v2/{repo}/manifests/{digest}").status == 200
        assert tags(client, repo) == ["other", "v1"]

    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status == 202
    assert client.get_manifest(repo, digest).status == 404
    assert client.request("HEAD", f"/v2/{repo}/manifests/{digest}").status == 404
    assert client.get_manifest(repo, "v1").status == 404
    assert tags(client, repo) == ["other"]
    # And it stays so on repeats, cached or not.
    assert client.get_manifest(repo, digest).status == 404
    assert client.get_manifest(repo, "other").status == 200


# -- changes behind the router's back: the event ------------------------------------


def test_tag_moved_by_the_index_rpc_is_seen_within_2s(dockyard: Dockyard,
                                                      client: RegistryClient) -> None:
    repo = unique_repo("rc")
    first, _ = client.push_image(repo, "moving")
    body = client.image_manifest(repo)
    second = push_by_digest(client, repo, body)
    for _ in range(2):
        assert digest_of(client.get_manifest(repo, "moving")) == first
        assert tags(client, repo) == ["moving"]
    hits = lookups(dockyard)["hit"]
    assert digest_of(client.get_manifest(repo, "moving")) == first
    assert lookups(dockyard)["hit"] == hits + 1

    # Another storage process would move the tag, and add one, with these very calls.
    rpc = index_rpc(dockyard)
    rpc.call("put_manifest", record(repo, second, len(body), "moving"))
    rpc.call("put_manifest", record(repo, second, len(body), "extra"))

    wait_until(lambda: digest_of(client.get_manifest(repo, "moving")) == second,
               timeout=2.0, what="the moved tag through the router")
    wait_until(lambda: tags(client, repo) == ["extra", "moving"],
               timeout=2.0, what="the new tag in the router's tags list")
    r = client.get_manifest(repo, "extra")
    assert r.status == 200 and r.data == body


def test_push_and_delete_straight_to_storage_are_seen_within_2s(
        dockyard: Dockyard, client: RegistryClient) -> None:
    repo = unique_repo("rc")
    client.push_image(repo, "v1")
    for _ in range(2):
        assert tags(client, repo) == ["v1"]
        assert client.get_manifest(repo, "v1").status == 200
        assert client.get_manifest(repo, "behind").status == 404

    storage = RegistryClient(service_url(dockyard, "storage"), timeout=10.0,
                             signer=dockyard.service_key())
    digest, body = storage.push_image(repo, "behind")
    wait_until(lambda: tags(client, repo) == ["behind", "v1"],
               timeout=2.0, what="the tag pushed to storage in the router's list")
    wait_until(lambda: digest_of(client.get_manifest(repo, "behind")) == digest,
               timeout=2.0, what="the tag pushed to storage through the router")
    assert client.get_manifest(repo, "behind").data == body

    assert storage.request("DELETE", f"/v2/{repo}/manifests/v1").status == 202
    wait_until(lambda: client.get_manifest(repo, "v1").status == 404,
               timeout=2.0, what="the tag deleted at storage through the router")
    wait_until(lambda: tags(client, repo) == ["behind"],
               timeout=2.0, what="the tag deleted at storage gone from the router's list")


# -- catalog, search, referrers -------------------------------------------------------


def test_catalog_and_search_show_a_new_repository_at_once(dockyard: Dockyard,
                                                          client: RegistryClient) -> None:
    word = uuid.uuid4().hex[:16]
    repo = f"rc-catalog/{word}"
    # The page that starts just before the new name, and a search only it matches.
    page = f"/v2/_catalog?n=2&last={repo[:-1]}"
    search = f"/v1/search?q={word}"
    for _ in range(2):
        assert repo not in get_json(client, page)["repositories"]
        assert get_json(client, search)["num_results"] == 0
    hits = lookups(dockyard)["hit"]
    get_json(client, page)
    get_json(client, search)
    assert lookups(dockyard)["hit"] == hits + 2  # both were cached

    client.push_image(repo, "v1")
    listed = get_json(client, page)["repositories"]
    found = get_json(client, search)
    assert listed[0] == repo, (
        f"catalog still without {repo} right after its push: {listed}; see "
        "test_catalog_read_your_writes_without_waiting_for_the_event")
    assert found["num_results"] == 1, found
    assert [x["name"] for x in found["results"]] == [repo]
    # And cached that way.
    assert get_json(client, page)["repositories"][0] == repo
    assert get_json(client, search)["num_results"] == 1


def test_referrers_show_a_new_referrer_at_once(dockyard: Dockyard,
                                               client: RegistryClient) -> None:
    repo = unique_repo("rc")
    subject, subject_body = client.push_image(repo, "v1")
    url = f"/v2/{repo}/referrers/{subject}"
    for _ in range(2):
        r = client.request("GET", url)
        assert r.status == 200
        assert r.headers["Content-Type"] == OCI_INDEX
        assert json.loads(r.data)["manifests"] == []
    hits = lookups(dockyard)["hit"]
    assert get_json(client, url)["manifests"] == []
    assert lookups(dockyard)["hit"] == hits + 1

    body = client.image_manifest(repo, artifact_type=ARTIFACT, subject={
        "mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_body)})
    r = client.put_manifest(repo, sha256(body), body)
    assert r.status == 201 and r.headers["OCI-Subject"] == subject
    referrer = digest_of(r)

    for _ in range(2):
        listed = get_json(client, url)["manifests"]
        assert [(d["digest"], d.get("artifactType")) for d in listed] == [(referrer, ARTIFACT)]
        assert listed[0]["size"] == len(body)

    assert client.request("DELETE", f"/v2/{repo}/manifests/{referrer}").status == 202
    assert get_json(client, url)["manifests"] == []


# -- headers -----------------------------------------------------------------------------


def test_cached_answers_carry_the_routers_own_request_id_and_no_internal_header(
        dockyard: Dockyard, client: RegistryClient) -> None:
    repo = unique_repo("rc")
    client.push_image(repo, "v1")
    urls = [f"/v2/{repo}/manifests/v1", f"/v2/{repo}/tags/list",
            f"/v2/_catalog?n=1&last={repo[:-1]}"]
    for url in urls:
        miss = client.request("GET", url, headers={"Accept": OCI_MANIFEST})
        assert miss.status == 200
        assert not [k for k in miss.headers if k.lower().startswith("x-dockyard-")]

    before = lookups(dockyard)["hit"]
    ids: list[str] = []
    for url in urls:
        for _ in range(3):
            r = client.request("GET", url, headers={"Accept": OCI_MANIFEST})
            assert r.status == 200
            assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
            assert not [k for k in r.headers if k.lower().startswith("x-dockyard-")], r.headers
            assert len(r.headers.getlist("X-Request-Id")) == 1
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
            ids.append(r.headers["X-Request-Id"])
    assert lookups(dockyard)["hit"] == before + len(ids)
    assert len(set(ids)) == len(ids), "a cached answer replayed an earlier request id"

    # A client's own id is used, on a hit too, and names the router's access line.
    mine = uuid.uuid4().hex
    r = client.request("GET", urls[0], headers={"Accept": OCI_MANIFEST, "X-Request-Id": mine})
    assert r.status == 200
    assert r.headers.getlist("X-Request-Id") == [mine]
    wait_logged(dockyard, mine)
    lines = access_lines(dockyard)
    for request_id in [*ids, mine]:
        assert [s for s, _, _, _, rid in lines if rid == request_id] == ["router"]


def test_link_header_follows_each_requests_host_and_scheme(dockyard: Dockyard,
                                                          client: RegistryClient) -> None:
    repo = unique_repo("rc")
    client.push_image(repo, "a")
    client.push_image(repo, "b")
    url = f"/v2/{repo}/tags/list?n=1"
    cases = [({"Host": "alpha.example:5000"}, "http://alpha.example:5000"),
             ({"Host": "beta.example"}, "http://beta.example"),
             ({"Host": "alpha.example:5000", "X-Forwarded-Proto": "https"},
              "https://alpha.example:5000")]
    before = lookups(dockyard)["hit"]
    for _ in range(2):
        for headers, base in cases:
            r = client.request("GET", url, headers=headers)
            assert r.status == 200
            assert json.loads(r.data)["tags"] == ["a"]
            assert r.headers["Link"] == f'<{base}/v2/{repo}/tags/list?n=1&last=a>; rel="next"'
    assert lookups(dockyard)["hit"] == before + len(cases)


# -- bypass ------------------------------------------------------------------------------


def test_conditional_and_range_requests_bypass_the_cache(dockyard: Dockyard,
                                                         client: RegistryClient) -> None:
    repo = unique_repo("rc")
    digest, body = client.push_image(repo, "v1")
    path = f"/v2/{repo}/manifests/v1"
    accept = {"Accept": OCI_MANIFEST}
    for _ in range(2):
        r = client.request("GET", path, headers=accept)
        assert r.status == 200 and r.data == body
    etag = r.headers["ETag"]
    assert etag == f'"{digest}"'
    storage = service_url(dockyard, "storage")

    cases: list[tuple[dict[str, str], int, bytes]] = [
        ({"If-None-Match": etag}, 304, b""),
        ({"If-None-Match": '"sha256:0000"'}, 200, body),
        ({"Range": "bytes=0-9"}, direct("GET", storage + path, signer=dockyard.service_key(),
                                        headers={**accept, "Range": "bytes=0-9"}).status, body),
    ]
    assert cases[2][1] in (200, 206)
    for extra, status, expected in cases:
        before = lookups(dockyard)
        r = client.request("GET", path, headers={**accept, **extra})
        assert r.status == status, (extra, r.status)
        if status == 206:
            assert r.data == body[:10]
        else:
            assert r.data == expected
        if status != 304:
            assert digest_of(r) == digest
        wait_logged(dockyard, r.headers["X-Request-Id"])
        after = lookups(dockyard)
        assert after["bypass"] == before["bypass"] + 1, extra
        assert after["hit"] == before["hit"] and after["miss"] == before["miss"]
        # It reached storage.
        served_by = {s for s, _, _, _, rid in access_lines(dockyard)
                     if rid == r.headers["X-Request-Id"]}
        assert served_by == {"router", "storage"}, extra

    head = client.request("HEAD", path, headers={**accept, "If-None-Match": etag})
    assert head.status == 304
    # The cache entry is untouched by all that: still cached, still right. (Each
    # router process of `serve` has its own cache, and this request may reach one
    # that has not cached it yet: a hit there, or a miss, but no bypass.)
    before = lookups(dockyard)
    r = client.request("GET", path, headers=accept)
    assert r.status == 200 and r.data == body
    after = lookups(dockyard)
    assert after["bypass"] == before["bypass"]
    assert after["hit"] + after["miss"] == before["hit"] + before["miss"] + 1


# -- content negotiation -----------------------------------------------------------------


def test_each_accept_header_is_its_own_entry(dockyard: Dockyard,
                                             client: RegistryClient) -> None:
    repo = unique_repo("rc")
    images = {}
    for arch in ("arm64", "amd64"):
        body = client.image_manifest(repo)
        images[arch] = (push_by_digest(client, repo, body), body)
    index_body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": images[arch][0],
                       "size": len(images[arch][1]),
                       "platform": {"os": "linux", "architecture": arch}}
                      for arch in ("arm64", "amd64")],
    }).encode()
    r = client.put_manifest(repo, "multi", index_body, OCI_INDEX)
    assert r.status == 201
    index_digest = digest_of(r)

    single = OCI_MANIFEST
    both = f"{OCI_INDEX}, {OCI_MANIFEST}"
    amd64_digest, amd64_body = images["amd64"]
    before = lookups(dockyard)
    for _ in range(3):
        r = client.get_manifest(repo, "multi", accept=single)
        assert r.status == 200
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert digest_of(r) == amd64_digest
        assert r.data == amd64_body
        r = client.get_manifest(repo, "multi", accept=both)
        assert r.status == 200
        assert r.headers["Content-Type"] == OCI_INDEX
        assert digest_of(r) == index_digest
        assert r.data == index_body
    head = client.request("HEAD", f"/v2/{repo}/manifests/multi", headers={"Accept": single})
    assert head.status == 200 and digest_of(head) == amd64_digest
    assert head.headers["Content-Length"] == str(len(amd64_body))
    wait_logged(dockyard, head.headers["X-Request-Id"])

    # The index answer is cached per its Accept; the linux/amd64 child served in
    # its place is not (the index did not vouch for the child), so each of those
    # four requests goes to storage.
    after = lookups(dockyard)
    assert after["miss"] == before["miss"] + 5
    assert after["hit"] == before["hit"] + 2
    assert backend_reads(dockyard, f"/{repo}/manifests/multi") == 5


# -- orderings of events and answers, shown deterministically with an in-process router -----
#
# The router below is the real one from `create_app`, forwarding to the session's
# real storage and index, with its events subscription replaced by the test: the
# cache is switched live by hand, and an event "arrives" when the test says so.
# That pins down orderings that real processes produce only now and then.


def inprocess_router(dockyard: Dockyard) -> tuple[falcon.testing.TestClient, ResponseCache]:
    cfg = config.load(None, environ={
        "DOCKYARD_LOG_ACCESS": "false",
        "DOCKYARD_ROUTER_STORAGE_URLS": service_url(dockyard, "storage"),
        "DOCKYARD_ROUTER_INDEX_URLS": service_url(dockyard, "index"),
        "DOCKYARD_INTERNAL_SECRET_FILE": str(dockyard.data_dir / "internal-secret"),
    })
    cache = ResponseCache(EventCache(ttl=60.0, max_bytes=1 << 20), Metrics("router-test"))
    app = create_router_app(cfg, cache=cache)
    cache.cache.events_state(True)
    return falcon.testing.TestClient(app), cache


def redis_client(dockyard: Dockyard) -> redis.Redis:
    return redis.Redis.from_url(dockyard.redis_url())


def test_writes_forwarded_by_a_router_are_read_by_it_without_the_event(
        dockyard: Dockyard, client: RegistryClient) -> None:
    router, cache = inprocess_router(dockyard)
    repo = unique_repo("rc")
    first, _ = client.push_image(repo, "v1")
    manifests = f"/v2/{repo}/manifests"
    listing = f"/v2/{repo}/tags/list"
    assert router.simulate_get(listing).json["tags"] == ["v1"]
    assert router.simulate_get(f"{manifests}/v1").headers["Docker-Content-Digest"] == first
    cached = len(cache.cache)
    assert cached >= 2

    # Without events, a change made through another router is not seen here: this
    # router really answers from its cache ...
    client.push_image(repo, "elsewhere")
    assert router.simulate_get(listing).json["tags"] == ["v1"]

    # ... while its own writes are, each at once.
    body = client.image_manifest(repo)  # blobs through the real router
    r = router.simulate_put(f"{manifests}/v2", body=body,
                            headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert router.simulate_get(listing).json["tags"] == ["elsewhere", "v1", "v2"]
    got = router.simulate_get(f"{manifests}/v2")
    assert got.status_code == 200 and got.content == body

    assert router.simulate_delete(f"{manifests}/v1").status_code == 202
    assert router.simulate_get(f"{manifests}/v1").status_code == 404
    assert router.simulate_get(listing).json["tags"] == ["elsewhere", "v2"]

    assert router.simulate_get(f"{manifests}/{sha256(body)}").status_code == 200
    assert router.simulate_delete(f"{manifests}/{sha256(body)}").status_code == 202
    assert router.simulate_get(f"{manifests}/{sha256(body)}").status_code == 404
    assert router.simulate_get(f"{manifests}/v2").status_code == 404
    assert router.simulate_get(listing).json["tags"] == ["elsewhere"]


def test_catalog_read_your_writes_without_waiting_for_the_event(
        dockyard: Dockyard, client: RegistryClient) -> None:
    router, _ = inprocess_router(dockyard)
    word = uuid.uuid4().hex[:16]
    repo = f"rc-catalog/{word}"
    page = f"/v2/_catalog?n=2&last={repo[:-1]}"
    assert router.simulate_get(page).json["repositories"][:1] != [repo]

    body = client.image_manifest(repo)  # blobs through the real router
    r = router.simulate_put(f"/v2/{repo}/manifests/v1", body=body,
                            headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    # The index has it ...
    index_page = json.loads(direct("GET", service_url(dockyard, "index") + page,
                                   signer=dockyard.service_key()).data)
    assert index_page["repositories"][:1] == [repo]
    # ... and the event has not reached this router yet; a write it forwarded
    # itself must be visible to it anyway.
    assert router.simulate_get(page).json["repositories"][:1] == [repo]


def test_event_reaching_the_router_before_storage_leaves_no_stale_entry(
        dockyard: Dockyard, client: RegistryClient) -> None:
    router, cache = inprocess_router(dockyard)
    repo = unique_repo("rc")
    first, _ = client.push_image(repo, "moving")
    body = client.image_manifest(repo)
    second = push_by_digest(client, repo, body)
    storage = service_url(dockyard, "storage") + f"/v2/{repo}/manifests/moving"
    key = dockyard.service_key()
    accept = {"Accept": OCI_MANIFEST}
    for _ in range(2):  # storage's tag cache has it now
        assert digest_of(direct("GET", storage, headers=accept, signer=key)) == first
    assert router.simulate_get(f"/v2/{repo}/manifests/moving",
                               headers=accept).headers["Docker-Content-Digest"] == first

    # The index moves the tag; its event reaches the router first ...
    db = redis_client(dockyard)
    db.hset(f"dockyard:repo:{repo}:tagmap", "moving", second)
    cache.cache.invalidate(events.repo_scope(repo))
    during = router.simulate_get(f"/v2/{repo}/manifests/moving", headers=accept)
    assert during.status_code == 200
    # ... and storage a moment later (the router has handled this event already).
    db.publish(events.channel("dockyard:"), events.repo_scope(repo))
    wait_until(lambda: digest_of(direct("GET", storage, headers=accept, signer=key)) == second,
               timeout=2.0, what="storage serving the moved tag")

    after = router.simulate_get(f"/v2/{repo}/manifests/moving", headers=accept)
    assert after.headers["Docker-Content-Digest"] == second


def test_delete_by_digest_elsewhere_leaves_no_stale_entry(
        dockyard: Dockyard, client: RegistryClient) -> None:
    router, cache = inprocess_router(dockyard)
    repo = unique_repo("rc")
    body = client.image_manifest(repo)
    digest = push_by_digest(client, repo, body)
    path = f"/v2/{repo}/manifests/{digest}"
    assert router.simulate_get(path).status_code == 200

    # Storage's DELETE, step by step: the index forgets the manifest and publishes,
    # and the event reaches this router ...
    index_rpc(dockyard).call("delete_manifest", {"repo": repo, "digest": digest})
    cache.cache.invalidate(events.repo_scope(repo))
    # ... which is asked for it before storage has unlinked it ...
    assert router.simulate_get(path).status_code == 200
    # ... and then storage's DELETE unlinks it and announces the change once more,
    # after the unlink (the order is pinned by a unit test of the storage app):
    # delivering what it published is what drops the entry this router just kept.
    pubsub = redis_client(dockyard).pubsub()
    pubsub.subscribe(events.channel("dockyard:"))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    storage = service_url(dockyard, "storage")
    key = dockyard.service_key()
    assert direct("DELETE", storage + path, signer=key).status == 202
    assert direct("GET", storage + path, signer=key).status == 404
    published = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        published.append(message["data"].decode())
    pubsub.close()
    assert published.count(events.repo_scope(repo)) == 2
    assert router.simulate_get(path).status_code == 200  # not delivered yet
    cache.cache.invalidate(published[-1])

    assert router.simulate_get(path).status_code == 404
