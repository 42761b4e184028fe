"""The index's summary reads (services/index/summaries.py) through its HTTP API,
against a real redis-server: sizes counted once per blob and exact across deletes,
push times, sorting and paging of tags, an index's platforms and size."""

from __future__ import annotations

import time

import redis

from services.index.schema import Keys
from tests.unit.conftest import Api
from tests.unit.test_index_app import OCI_INDEX, digest, put, rpc


def summaries(api: Api, query: str) -> list[dict]:
    r = api("GET", f"/v2/_dockyard/repositories?{query}")
    assert r.status_code == 200, r.text
    return r.json["repositories"]


def tags(api: Api, repo: str, query: str = "") -> dict:
    r = api("GET", f"/v2/{repo}/_dockyard/tags?{query}")
    assert r.status_code == 200, r.text
    return r.json


def test_repository_size_counts_each_blob_once_and_survives_deletes(index_api: Api) -> None:
    shared, own_a, own_b = digest(), digest(), digest()
    a = put(index_api, "sum/size", "a", size=100, refs=[shared, own_a],
            blob_sizes={shared: 1000, own_a: 10})
    # Pushed again, under another tag: counted once.
    put(index_api, "sum/size", "a2", digest=a, size=100, refs=[shared, own_a],
        blob_sizes={shared: 1000, own_a: 10})
    b = put(index_api, "sum/size", "b", size=200, refs=[shared, own_b],
            blob_sizes={shared: 1000, own_b: 20})
    [s] = summaries(index_api, "name=sum/size")
    assert (s["name"], s["tags"], s["size"]) == ("sum/size", 3, 100 + 200 + 1000 + 10 + 20)

    assert rpc(index_api, "delete_manifest", repo="sum/size", digest=a) == {"tags_removed": 2}
    [s] = summaries(index_api, "name=sum/size")
    assert (s["tags"], s["size"]) == (1, 200 + 1000 + 20)
    # Deleting twice subtracts nothing more.
    rpc(index_api, "delete_manifest", repo="sum/size", digest=a)
    rpc(index_api, "delete_manifest", repo="sum/size", digest=b)
    [s] = summaries(index_api, "name=sum/size")
    assert (s["tags"], s["size"]) == (0, 0)


def test_catalog_pages_with_descriptions_and_unknown_names_are_left_out(index_api: Api) -> None:
    for i in range(3):
        put(index_api, f"sum-cat/r{i}", "v1",
            annotations={"org.opencontainers.image.description": f"repo {i}"})
    page = summaries(index_api, "n=2&last=sum-cat/")
    assert [r["name"] for r in page] == ["sum-cat/r0", "sum-cat/r1"]
    assert page[0]["description"] == "repo 0"
    assert page[0]["pushed"].endswith("Z")
    named = summaries(index_api, "name=sum-cat/r2&name=sum-cat/nope&name=sum-cat/r0")
    assert [r["name"] for r in named] == ["sum-cat/r2", "sum-cat/r0"]
    r = index_api("GET", "/v2/_dockyard/repositories?n=2&last=sum-cat/")
    assert 'rel="next"' in r.headers["Link"]


def test_tags_sort_page_and_describe_an_index(index_api: Api) -> None:
    layer = digest()
    amd = put(index_api, "sum/tags", None, size=50, refs=[layer], blob_sizes={layer: 500})
    arm = put(index_api, "sum/tags", None, size=60, refs=[layer], blob_sizes={layer: 500})
    put(index_api, "sum/tags", "multi", media_type=OCI_INDEX, size=300, refs=[amd, arm],
        platforms=["linux/amd64", "linux/arm64/v8"])
    time.sleep(0.01)
    put(index_api, "sum/tags", "zz-newest", size=7)
    body = tags(index_api, "sum/tags")
    assert [t["tag"] for t in body["tags"]] == ["multi", "zz-newest"]
    multi = body["tags"][0]
    assert multi["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert multi["size"] == 300 + (50 + 500) + (60 + 500)
    assert multi["mediaType"] == OCI_INDEX
    assert [t["tag"] for t in tags(index_api, "sum/tags", "sort=pushed")["tags"]] == [
        "zz-newest", "multi"]
    assert [t["tag"] for t in tags(index_api, "sum/tags", "sort=-name")["tags"]] == [
        "zz-newest", "multi"]
    second = tags(index_api, "sum/tags", "n=1&page=2")
    assert (second["total"], [t["tag"] for t in second["tags"]]) == (2, ["zz-newest"])
    # Every page carries the repository's summary, as the summaries read answers it.
    [summary] = summaries(index_api, "name=sum/tags")
    assert second["repository"] == summary
    assert (summary["tags"], summary["size"]) == (2, 50 + 60 + 300 + 500 + 7)
    for query in ("n=0", "n=0&sort=pushed", "page=9"):
        empty = tags(index_api, "sum/tags", query)
        assert (empty["total"], empty["tags"], empty["repository"]) == (2, [], summary), query
    rpc(index_api, "delete_tag", repo="sum/tags", tag="multi")
    assert [t["tag"] for t in tags(index_api, "sum/tags")["tags"]] == ["zz-newest"]


def test_bad_parameters_get_registry_errors(index_api: Api) -> None:
    assert index_api("GET", "/v2/sum/none/_dockyard/tags").status_code == 404
    assert index_api("GET", "/v2/Bad/_dockyard/tags").json["errors"][0]["code"] == "NAME_INVALID"
    assert index_api("GET", "/v2/_dockyard/repositories?n=x").status_code == 400
    assert index_api("GET", "/v2/_dockyard/repositories?name=A").status_code == 400
    too_many = "&".join(f"name=r{i}" for i in range(101))
    assert index_api("GET", f"/v2/_dockyard/repositories?{too_many}").status_code == 400


def test_tags_without_push_times_still_sort_and_deletes_drop_times(
        index_api: Api, index_config: dict) -> None:
    """Tags recorded before push times were kept sort as oldest; a manifest's delete
    drops its tags' times, so the sorted set and the tags never disagree for long."""
    d = put(index_api, "sum/old", "first")
    put(index_api, "sum/old", "second")
    put(index_api, "sum/old", "third", digest=d)
    prefix = index_config["index"]["redis"]["key_prefix"]
    client = redis.Redis.from_url(index_config["index"]["redis"]["url"])
    client.zrem(Keys(prefix).pushed("sum/old"), "first")
    assert [t["tag"] for t in tags(index_api, "sum/old", "sort=pushed")["tags"]] == [
        "third", "second", "first"]
    rpc(index_api, "delete_manifest", repo="sum/old", digest=d)
    assert client.zrange(Keys(prefix).pushed("sum/old"), 0, -1) == [b"second"]
    assert [t["tag"] for t in tags(index_api, "sum/old", "sort=-pushed")["tags"]] == ["second"]
