"""The index's endpoints through the router: tags, catalog, referrers and search."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.integration.conftest import Pusher
from tests.integration.helpers import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    public_location,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code, sha256

DESCRIPTION = "org.opencontainers.image.description"


def next_link(headers: object, dockyard: Dockyard) -> str | None:
    """The target of a Link rel="next" header, checked to be on the router."""
    link = headers.get("Link")  # type: ignore[attr-defined]
    if link is None:
        return None
    target, _, rel = link.partition(";")
    assert rel.strip() == 'rel="next"', link
    assert target.startswith("<") and target.endswith(">"), link
    return public_location(target[1:-1], dockyard.addr)


# -- tags ----------------------------------------------------------------------------------


@pytest.fixture
def tagged(client: RegistryClient, pusher: Pusher, repo: str) -> tuple[str, list[str]]:
    body = pusher.image(repo)
    # Pushed out of order: the list must come back in lexical order regardless.
    tags = ["v10", "A", "v2", "latest", "v1", "_x", "v1.0", "b-c"]
    for tag in tags:
        pusher.push(repo, tag, body)
    return repo, sorted(tags)


def test_tags_list_whole(client: RegistryClient, tagged: tuple[str, list[str]]) -> None:
    repo, tags = tagged
    status, headers, body = client.json("GET", f"/v2/{repo}/tags/list")
    assert status == 200
    assert body == {"name": repo, "tags": tags}
    assert "Link" not in headers


def test_tags_list_pages_with_n_and_last(client: RegistryClient, dockyard: Dockyard,
                                         tagged: tuple[str, list[str]]) -> None:
    repo, tags = tagged
    status, headers, body = client.json("GET", f"/v2/{repo}/tags/list?n=3")
    assert status == 200
    assert body["tags"] == tags[:3]
    link = next_link(headers, dockyard)
    assert link is not None
    query = parse_qs(urlsplit(link).query)
    assert query == {"n": ["3"], "last": [tags[2]]}

    status, _, body = client.json("GET", f"/v2/{repo}/tags/list?n=2&last={tags[3]}")
    assert body["tags"] == tags[4:6]
    status, _, body = client.json("GET", f"/v2/{repo}/tags/list?last={tags[5]}")
    assert body["tags"] == tags[6:]
    status, _, body = client.json("GET", f"/v2/{repo}/tags/list?n=0")
    assert status == 200
    assert body["tags"] == []


def test_tags_list_follow_links_to_the_end(client: RegistryClient, dockyard: Dockyard,
                                           tagged: tuple[str, list[str]]) -> None:
    repo, tags = tagged
    seen: list[str] = []
    url: str | None = f"/v2/{repo}/tags/list?n=3"
    for _ in range(10):  # 8 tags in pages of 3: three pages; the bound is only a guard
        if url is None:
            break
        status, headers, body = client.json("GET", url)
        assert status == 200
        seen += body["tags"]
        url = next_link(headers, dockyard)
    assert url is None
    assert seen == tags


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "9999999999", "²", "%C2%B2"])
def test_tags_list_invalid_n_is_400(client: RegistryClient, tagged: tuple[str, list[str]],
                                    n: str) -> None:
    repo, _ = tagged
    status, _, body = client.json("GET", f"/v2/{repo}/tags/list?n={n}")
    assert status == 400
    assert error_code(body) == "PAGINATION_NUMBER_INVALID"


def test_tags_list_of_unknown_repository(client: RegistryClient, repo: str) -> None:
    status, _, body = client.json("GET", f"/v2/{repo}/tags/list")
    assert status == 404
    assert error_code(body) == "NAME_UNKNOWN"


def test_tags_list_of_invalid_name(client: RegistryClient) -> None:
    status, _, body = client.json("GET", "/v2/Not_Valid/tags/list")
    assert status == 400
    assert error_code(body) == "NAME_INVALID"


# -- catalog -------------------------------------------------------------------------------


def test_catalog_pages_in_lexical_order(client: RegistryClient, dockyard: Dockyard,
                                        pusher: Pusher) -> None:
    # The session registry holds other tests' repositories too, so page from just
    # before our own unique prefix and stop once past it.
    prefix = f"cat-{uuid.uuid4().hex[:12]}"
    names = [f"{prefix}/{s}" for s in ("b", "a", "c/d", "a-z", "c", "e")]
    for name in names:
        pusher.push(name, "v1", pusher.image(name))
    expected = sorted(names)

    seen: list[str] = []
    url: str | None = f"/v2/_catalog?n=2&last={prefix}"
    for _ in range(10):
        if url is None:
            break
        status, headers, body = client.json("GET", url)
        assert status == 200
        assert len(body["repositories"]) <= 2
        seen += body["repositories"]
        if seen and not seen[-1].startswith(prefix):
            break
        url = next_link(headers, dockyard)
    ours = [name for name in seen if name.startswith(prefix + "/")]
    assert ours == expected
    assert seen == sorted(seen)

    status, _, body = client.json("GET", f"/v2/_catalog?n=3&last={expected[1]}")
    assert body["repositories"][:3] == expected[2:5]


def test_catalog_whole_is_sorted_and_has_no_duplicates(client: RegistryClient,
                                                       pusher: Pusher, repo: str) -> None:
    pusher.push(repo, "v1", pusher.image(repo))
    status, _, body = client.json("GET", "/v2/_catalog?n=10000")
    assert status == 200
    repos = body["repositories"]
    assert repo in repos
    assert repos == sorted(set(repos))


def test_catalog_invalid_n_is_400(client: RegistryClient) -> None:
    status, _, body = client.json("GET", "/v2/_catalog?n=x")
    assert status == 400
    assert error_code(body) == "PAGINATION_NUMBER_INVALID"


# -- referrers -----------------------------------------------------------------------------


def test_referrers_lists_the_manifests_with_that_subject(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    subject_digest, subject = pusher.push(repo, "v1", pusher.image(repo))
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    sig = pusher.image(repo, artifactType="application/vnd.example.sig",
                       subject=subject_desc, annotations={"made.by": "test"})
    sbom = pusher.image(repo, artifactType="application/vnd.example.sbom",
                        subject=subject_desc)
    unrelated = pusher.image(repo, artifactType="application/vnd.example.sig")
    for body in (sig, sbom, unrelated):
        pusher.push(repo, sha256(body), body)

    status, headers, index = client.json("GET", f"/v2/{repo}/referrers/{subject_digest}")
    assert status == 200
    assert headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in headers
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sha256(sig), sha256(sbom)}
    assert by_digest[sha256(sig)] == {
        "mediaType": OCI_MANIFEST, "digest": sha256(sig), "size": len(sig),
        "artifactType": "application/vnd.example.sig", "annotations": {"made.by": "test"},
    }
    assert by_digest[sha256(sbom)]["artifactType"] == "application/vnd.example.sbom"
    assert by_digest[sha256(sbom)]["size"] == len(sbom)

    status, headers, index = client.json(
        "GET", f"/v2/{repo}/referrers/{subject_digest}?artifactType=application/vnd.example.sbom")
    assert status == 200
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in index["manifests"]] == [sha256(sbom)]


def test_referrers_of_an_index_with_subject_and_of_a_config_artifact(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    subject_digest, subject = pusher.push(repo, "v1", pusher.image(repo))
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    # No artifactType: the config media type names the artifact.
    old_style = pusher.image(repo, config_type="application/vnd.example.old+json",
                             subject=subject_desc)
    pusher.push(repo, sha256(old_style), old_style)
    status, _, index = client.json("GET", f"/v2/{repo}/referrers/{subject_digest}")
    assert status == 200
    assert index["manifests"] == [{
        "mediaType": OCI_MANIFEST, "digest": sha256(old_style), "size": len(old_style),
        "artifactType": "application/vnd.example.old+json",
    }]


def test_referrers_of_image_manifests_without_artifact_type_name_their_config_type(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    """The spec: "If the artifactType is empty or missing in an image manifest, the value of
    artifactType MUST be set to the config descriptor mediaType value"; the filter too."""
    subject_digest, subject = pusher.push(repo, "v1", pusher.image(repo))
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    oci = pusher.image(repo, subject=subject_desc)
    docker = pusher.image(repo, media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG,
                          subject=subject_desc)
    pusher.push(repo, sha256(oci), oci)
    pusher.push(repo, sha256(docker), docker, DOCKER_MANIFEST)
    _, _, index = client.json("GET", f"/v2/{repo}/referrers/{subject_digest}")
    kinds = {d["digest"]: d.get("artifactType") for d in index["manifests"]}
    assert kinds == {sha256(oci): OCI_CONFIG, sha256(docker): DOCKER_CONFIG}
    for wanted, digest in ((OCI_CONFIG, sha256(oci)), (DOCKER_CONFIG, sha256(docker))):
        status, headers, index = client.json(
            "GET", f"/v2/{repo}/referrers/{subject_digest}?artifactType={quote(wanted)}")
        assert status == 200 and headers["OCI-Filters-Applied"] == "artifactType"
        assert [d["digest"] for d in index["manifests"]] == [digest]


def test_referrers_of_unknown_digest_is_an_empty_index(client: RegistryClient, pusher: Pusher,
                                                       repo: str) -> None:
    pusher.push(repo, "v1", pusher.image(repo))
    for name in (repo, repo + "/never-pushed"):
        status, headers, index = client.json(
            "GET", f"/v2/{name}/referrers/{sha256(uuid.uuid4().bytes)}")
        assert status == 200
        assert headers["Content-Type"] == OCI_INDEX
        assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_referrers_with_malformed_digest_is_400(client: RegistryClient, repo: str) -> None:
    status, _, body = client.json("GET", f"/v2/{repo}/referrers/sha256:nothex")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"


def test_referrers_forget_deleted_manifests(client: RegistryClient, pusher: Pusher,
                                           repo: str) -> None:
    subject_digest, subject = pusher.push(repo, "v1", pusher.image(repo))
    sig = pusher.image(repo, artifactType="application/vnd.example.sig",
                       subject={"mediaType": OCI_MANIFEST, "digest": subject_digest,
                                "size": len(subject)})
    pusher.push(repo, sha256(sig), sig)
    assert client.request("DELETE", f"/v2/{repo}/manifests/{sha256(sig)}").status == 202
    _, _, index = client.json("GET", f"/v2/{repo}/referrers/{subject_digest}")
    assert index["manifests"] == []


# -- search --------------------------------------------------------------------------------


def search(client: RegistryClient, query: str, **params: object) -> dict:
    status, headers, body = client.json("GET", "/v1/search", fields={"q": query, **params})
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    return body


def test_search_response_shape(client: RegistryClient, pusher: Pusher) -> None:
    token = uuid.uuid4().hex[:12]
    name = f"search/{token}"
    pusher.push(name, "v1", pusher.image(name, annotations={DESCRIPTION: "hello"}))
    body = search(client, token)
    assert body == {
        "num_results": 1, "num_pages": 1, "page": 1, "page_size": 25, "query": token,
        "results": [{"name": name, "description": "hello", "star_count": 0,
                     "is_official": False, "is_automated": False}],
    }


def test_search_is_case_insensitive_substring_of_name(client: RegistryClient,
                                                      pusher: Pusher) -> None:
    token = uuid.uuid4().hex[:12]
    names = [f"s/{token}-alpha", f"s/beta-{token}", f"s/{token}/gamma"]
    for name in names:
        pusher.push(name, "v1", pusher.image(name))
    body = search(client, token.upper())
    assert sorted(r["name"] for r in body["results"]) == sorted(names)
    body = search(client, f"{token}-ALP")
    assert [r["name"] for r in body["results"]] == [names[0]]


def test_search_matches_the_description_of_the_newest_tagged_manifest(
        client: RegistryClient, pusher: Pusher) -> None:
    token = uuid.uuid4().hex[:12]
    name = f"s/{uuid.uuid4().hex[:12]}"
    pusher.push(name, "v1", pusher.image(name, annotations={DESCRIPTION: f"Old {token}"}))
    assert [r["name"] for r in search(client, f"old {token}")["results"]] == [name]
    # A manifest pushed by digest only is not "tagged": it changes nothing.
    untagged = pusher.image(name, annotations={DESCRIPTION: f"Ghost {token}"})
    pusher.push(name, sha256(untagged), untagged)
    assert search(client, f"ghost {token}")["num_results"] == 0
    pusher.push(name, "v2", pusher.image(name, annotations={DESCRIPTION: f"New {token}"}))
    assert search(client, f"old {token}")["num_results"] == 0
    result = search(client, f"NEW {token}")["results"]
    assert [(r["name"], r["description"]) for r in result] == [(name, f"New {token}")]


def test_search_empty_query_lists_every_repository(client: RegistryClient) -> None:
    _, _, catalog = client.json("GET", "/v2/_catalog?n=10000")
    body = search(client, "", n=100)
    assert body["num_results"] == len(catalog["repositories"])
    assert body["num_pages"] == -(-len(catalog["repositories"]) // 100)
    names = [r["name"] for r in body["results"]]
    assert names == catalog["repositories"][:100]


@pytest.mark.parametrize(("n", "size"), [(None, 25), ("0", 1), ("-5", 1), ("1", 1),
                                         ("100", 100), ("101", 100), ("100000", 100),
                                         ("junk", 25), ("²", 25)])
def test_search_page_size_is_clamped(client: RegistryClient, pusher: Pusher,
                                     n: str | None, size: int) -> None:
    params = {} if n is None else {"n": n}
    body = search(client, "", **params)
    assert body["page_size"] == size
    assert len(body["results"]) == min(size, body["num_results"])


def test_search_pages(client: RegistryClient, pusher: Pusher) -> None:
    token = uuid.uuid4().hex[:12]
    names = sorted(f"p/{token}-{i}" for i in range(5))
    for name in names:
        pusher.push(name, "v1", pusher.image(name))
    pages = [search(client, token, n=2, page=p) for p in (1, 2, 3, 4)]
    assert [p["num_pages"] for p in pages] == [3] * 4
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    # All contain the token: the most recently pushed first.
    assert [r["name"] for p in pages for r in p["results"]] == names[::-1]


@pytest.mark.parametrize("metachar", [".*", "[a-z]", "(", "\\d+", "^", "$", "a|b", "+?"])
def test_search_regex_metacharacters_are_plain_text(client: RegistryClient, pusher: Pusher,
                                                    metachar: str) -> None:
    token = uuid.uuid4().hex[:12]
    name = f"meta/{token}"
    pusher.push(name, "v1",
                pusher.image(name, annotations={DESCRIPTION: f"lit {metachar} {token}"}))
    assert search(client, f"{token}{metachar}")["num_results"] == 0
    body = search(client, f"{metachar} {token}")
    assert [r["name"] for r in body["results"]] == [name]
    assert body["query"] == f"{metachar} {token}"


def test_search_long_and_unicode_queries(client: RegistryClient) -> None:
    for query in ("x" * 5000, "\u00e9\u4e2d\U0001f600", "\t\n"):
        body = search(client, query)
        assert body["query"] == query
        assert isinstance(body["results"], list)
    assert json.dumps(search(client, "%")["results"]) is not None
