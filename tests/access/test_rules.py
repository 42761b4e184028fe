"""Who gets which status, through the router of a real `dockyard serve` with rules.

401 with a challenge for no or bad credentials, 403 DENIED for a caller the
rules refuse, and the same answers whether or not a repository exists.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any

from tests.support.registry_client import error_code, sha256
from tests.support.secured import AuthClient, basic


def unique(prefix: str) -> str:
    return f"{prefix}/r{uuid.uuid4().hex[:10]}"


def raw(addr: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send `path` exactly as written (no client-side normalization of dots or escapes)."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_base_endpoint_needs_a_login(secured: Any, anon: AuthClient, as_user: Any) -> None:
    r = anon.request("GET", "/v2/")
    assert r.status == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{secured.url}/auth/token"')
    assert 'service="dockyard"' in challenge
    assert error_code(json.loads(r.data)) == "UNAUTHORIZED"
    assert as_user("alice").request("GET", "/v2/").status == 200
    bad = AuthClient(secured.url, basic("alice", "wrong"))
    assert bad.request("GET", "/v2/").status == 401
    # Health stays open for load balancers.
    assert anon.request("GET", "/healthz").status == 200


def test_push_and_pull_within_the_rules(as_user: Any, anon: AuthClient) -> None:
    alice, carol, reader = as_user("alice"), as_user("carol"), as_user("reader")
    name = unique("team-a")
    digest, body = alice.push_image(name, "v1")
    # carol is in group team-a.
    assert carol.get_manifest(name, "v1").data == body
    carol.push_image(name, "v2")
    # reader may pull readers/** only; alice may not delete.
    r = reader.get_manifest(name, "v1")
    assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED"
    r = alice.request("DELETE", f"/v2/{name}/manifests/{digest}")
    assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED"
    r = anon.get_manifest(name, "v1")
    assert r.status == 401
    assert f'scope="repository:{name}:pull"' in r.headers["WWW-Authenticate"]


def test_reader_and_anonymous_cannot_push(as_user: Any, admin: AuthClient,
                                          anon: AuthClient) -> None:
    name = unique("readers")
    admin.push_image(name, "v1")
    reader = as_user("reader")
    assert reader.get_manifest(name, "v1").status == 200
    r = reader.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 403 and error_code(json.loads(r.data)) == "DENIED"
    r = reader.put_manifest(name, "v2", b"{}")
    assert r.status == 403
    public = unique("public")
    admin.push_image(public, "v1")
    assert anon.get_manifest(public, "v1").status == 200
    r = anon.request("POST", f"/v2/{public}/blobs/uploads/")
    assert r.status == 401
    assert f'scope="repository:{public}:pull,push"' in r.headers["WWW-Authenticate"]


def _same_answer(client: AuthClient, method: str, existing: str, missing: str,
                 suffix: str) -> None:
    a = client.request(method, f"/v2/{existing}{suffix}")
    b = client.request(method, f"/v2/{missing}{suffix}")
    assert a.status == b.status and a.status in (401, 403), (a.status, b.status)
    assert a.data.replace(existing.encode(), b"X") == b.data.replace(missing.encode(), b"X")
    wa = a.headers.get("WWW-Authenticate", "").replace(existing, "X")
    assert wa == b.headers.get("WWW-Authenticate", "").replace(missing, "X")


def test_existence_does_not_leak(admin: AuthClient, as_user: Any, anon: AuthClient) -> None:
    existing, missing = unique("secret"), unique("secret")
    digest, _ = admin.push_image(existing, "v1")
    layer, _ = admin.random_blob(existing)
    for client in (anon, as_user("mallory"), as_user("alice")):
        for method, suffix in (("GET", "/manifests/v1"), ("HEAD", "/manifests/v1"),
                               ("GET", f"/manifests/{digest}"), ("GET", f"/blobs/{layer}"),
                               ("HEAD", f"/blobs/{layer}"), ("GET", "/tags/list"),
                               ("GET", f"/referrers/{digest}"),
                               ("POST", "/blobs/uploads/"),
                               ("DELETE", f"/manifests/{digest}")):
            _same_answer(client, method, existing, missing, suffix)


def test_catalog_lists_only_pullable_repositories(admin: AuthClient, as_user: Any,
                                                  anon: AuthClient) -> None:
    mine = sorted(unique("team-a") for _ in range(3))
    theirs = [unique("secret"), unique("readers")]
    public = unique("public")
    for name in [*mine, *theirs, public]:
        admin.push_image(name, "v1")
    everything = json.loads(admin.request("GET", "/v2/_catalog?n=10000").data)["repositories"]
    assert set(mine + theirs + [public]) <= set(everything)

    alice = as_user("alice")
    seen: list[str] = []
    url = "/v2/_catalog?n=2"
    for _ in range(1000):
        r = alice.request("GET", url)
        assert r.status == 200
        page = json.loads(r.data)["repositories"]
        assert len(page) <= 2
        seen.extend(page)
        link = r.headers.get("Link")
        if not link:
            break
        url = link[1:link.index(">")]
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(mine) | {public} <= set(seen)
    assert all(n.startswith(("team-a/", "public/")) for n in seen), seen
    anonymous = json.loads(anon.request("GET", "/v2/_catalog").data)["repositories"]
    assert public in anonymous
    assert all(n.startswith("public/") for n in anonymous)
    assert as_user("mallory").request("GET", "/v2/_catalog").status == 200


def test_search_lists_only_pullable_repositories(admin: AuthClient, as_user: Any) -> None:
    word = uuid.uuid4().hex[:8]
    visible, hidden = f"team-a/{word}-app", f"secret/{word}-app"
    admin.push_image(visible, "v1")
    admin.push_image(hidden, "v1")
    deadline = time.monotonic() + 10
    while True:
        found = json.loads(admin.request("GET", f"/v1/search?q={word}").data)
        if found["num_results"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {r["name"] for r in found["results"]} == {visible, hidden}
    mine = json.loads(as_user("alice").request("GET", f"/v1/search?q={word}").data)
    assert [r["name"] for r in mine["results"]] == [visible]
    assert mine["num_results"] == 1
    none = json.loads(as_user("mallory").request("GET", f"/v1/search?q={word}").data)
    assert none["results"] == [] and none["num_results"] == 0


def test_a_search_query_the_index_refuses_is_its_400_not_a_503(admin: AuthClient,
                                                             as_user: Any) -> None:
    """Filtering search per caller must not turn the index's refusal of a query (more
    than 10 words) into 503 UNAVAILABLE, which clients retry: it is the same 400."""
    words = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
                      "hotel", "india", "juliet", "kilo"])
    for client in (admin, as_user("alice")):
        r = client.request("GET", "/v1/search", fields={"q": words})
        assert r.status == 400, (r.status, r.data)
        assert error_code(json.loads(r.data)) == "UNSUPPORTED"
        assert b"at most 10 words" in r.data
        assert "Retry-After" not in r.headers
        # Ten words are a query like any other.
        r = client.request("GET", "/v1/search", fields={"q": words.rsplit(" ", 1)[0]})
        assert r.status == 200 and json.loads(r.data)["results"] == []


def test_a_long_search_query_is_matched_whole(admin: AuthClient, as_user: Any) -> None:
    """Every word of a query must be found, also past its 256th character."""
    word = uuid.uuid4().hex[:8]
    name = f"team-a/{word}-long"
    admin.push_image(name, "v1")
    alice = as_user("alice")
    deadline = time.monotonic() + 10
    while not json.loads(alice.request("GET", f"/v1/search?q={word}").data)["results"]:
        assert time.monotonic() < deadline, "the pushed repository was never found"
        time.sleep(0.2)
    for tail, found in (("long", [name]), ("absent" + word, [])):
        query = word + " " * 300 + tail
        r = alice.request("GET", "/v1/search", fields={"q": query})
        assert r.status == 200, r.data
        answer = json.loads(r.data)
        assert [x["name"] for x in answer["results"]] == found, (tail, answer)
        assert answer["query"] == query


def test_tags_and_referrers_need_pull(admin: AuthClient, as_user: Any) -> None:
    name = unique("team-a")
    digest, _ = admin.push_image(name, "v1")
    mallory, alice = as_user("mallory"), as_user("alice")
    assert mallory.request("GET", f"/v2/{name}/tags/list").status == 403
    assert mallory.request("GET", f"/v2/{name}/referrers/{digest}").status == 403
    assert alice.request("GET", f"/v2/{name}/tags/list").status == 200
    assert alice.request("GET", f"/v2/{name}/referrers/{digest}").status == 200


def test_mount_from_an_unreadable_repository_is_an_ordinary_upload(
        admin: AuthClient, as_user: Any) -> None:
    source, target = unique("secret"), unique("team-a")
    digest, _ = admin.random_blob(source)
    alice = as_user("alice")
    r = alice.request("POST", f"/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    assert r.status == 202, (r.status, r.data)
    assert alice.request("HEAD", f"/v2/{target}/blobs/{digest}").status == 404
    # Where the caller may pull the source, the mount happens.
    own, _ = alice.random_blob(target)
    other = unique("team-a")
    r = alice.request("POST", f"/v2/{other}/blobs/uploads/?mount={own}&from={target}")
    assert r.status == 201
    r = admin.request("POST", f"/v2/{unique('team-a')}/blobs/uploads/?mount={digest}"
                      f"&from={source}")
    assert r.status == 201


def test_upload_sessions_belong_to_who_opened_them(as_user: Any) -> None:
    alice, bot = as_user("alice"), as_user("ci-bot")
    name = unique("team-a")
    location = alice.start_upload(name)
    assert "_state=" in location
    data = b"chunk of alice"
    for method in ("GET", "PATCH", "DELETE"):
        r = bot.request(method, location, body=data if method == "PATCH" else None)
        assert r.status == 404, (method, r.status)
        assert error_code(json.loads(r.data)) == "BLOB_UPLOAD_UNKNOWN"
    r = bot.request("PUT", location + f"&digest={sha256(data)}", body=data)
    assert r.status == 404
    # Without its _state the URL is nobody's, not even alice's.
    bare = location.split("?")[0]
    assert alice.request("GET", bare).status == 404
    # Same user, other repository: the state names the repository too.
    other = unique("team-a")
    assert alice.request("GET", location.replace(name, other)).status == 404
    r = alice.request("PATCH", location, body=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202
    location = r.headers["Location"]
    r = alice.request("PUT", location + f"&digest={sha256(data)}")
    assert r.status == 201, (r.status, r.data)
    assert alice.request("GET", f"/v2/{name}/blobs/{sha256(data)}").data == data


def test_path_tricks_do_not_bypass_rules(secured: Any, admin: AuthClient) -> None:
    secret = unique("secret")
    admin.push_image(secret, "v1")
    inner = secret.split("/")[1]
    alice = {"Authorization": basic("alice")}
    reader = {"Authorization": basic("reader")}
    tricks = [
        f"/v2/team-a/../secret/{inner}/tags/list",
        f"/v2/team-a/%2E%2E/secret/{inner}/tags/list",
        f"/v2/team-a%2F..%2Fsecret%2F{inner}/tags/list",
        f"/v2/team-a//../secret/{inner}/tags/list",
        f"/v2//secret/{inner}/tags/list",
        f"/v2/SECRET/{inner}/tags/list",
        f"/v2/Secret/{inner}/manifests/v1",
        f"/V2/secret/{inner}/tags/list",
        f"/v2/secret/{inner.upper()}/tags/list",
        f"/v2/./secret/{inner}/tags/list",
        f"/v2/team-a/x/../../secret/{inner}/manifests/v1",
        f"/v2/team-a%2f..%2f..%2fsecret%2f{inner}/manifests/v1",
    ]
    for path in tricks:
        for method in ("GET", "HEAD"):
            status, body = raw(secured.addr, method, path, alice)
            assert status in (400, 401, 403, 404), (path, method, status)
            assert b"v1" not in body or status != 200, path
    # The plain path is refused too.
    assert raw(secured.addr, "GET", f"/v2/{secret}/tags/list", alice)[0] == 403
    # A method override never turns an allowed GET into a refused DELETE.
    readable = unique("readers")
    digest, _ = admin.push_image(readable, "v1")
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        status, _ = raw(secured.addr, "GET", f"/v2/{readable}/manifests/{digest}",
                        {**reader, header: "DELETE"})
        assert status == 403, header
    assert admin.get_manifest(readable, digest).status == 200
    assert raw(secured.addr, "HEAD", f"/v2/{readable}/manifests/v1", reader)[0] == 200


def test_audit_lines_and_no_secrets_in_logs(secured: Any, as_user: Any,
                                            admin: AuthClient) -> None:
    alice = as_user("alice")
    name = unique("team-a")
    digest, _ = alice.push_image(name, "v7")
    token = alice.token([f"repository:{name}:pull"], user="alice")
    bearer = AuthClient(secured.url, f"Bearer {token}")
    assert bearer.get_manifest(name, "v7").status == 200
    assert admin.request("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    deadline = time.monotonic() + 5
    expected = [f"audit identity=alice action=tag repository={name} reference=v7 "
                f"digest={digest}",
                f"audit identity=admin action=delete repository={name} reference={digest} "
                f"digest={digest}",
                f"audit identity=alice action=push-blob repository={name}"]
    while time.monotonic() < deadline:
        text = secured.log_text()
        if all(line in text for line in expected):
            break
        time.sleep(0.1)
    for line in expected:
        assert line in text, line
    for secret in ("alice-pw", "admin-pw", basic("alice")[6:], token, token.split(".")[2]):
        assert secret not in text


def test_htpasswd_changes_apply_without_restart(secured: Any) -> None:
    import subprocess

    from tests.support.processes import VENV_BIN

    htpasswd = secured.config.parent / "htpasswd"
    newcomer = AuthClient(secured.url, basic("newcomer", "first-pw"))
    assert newcomer.request("GET", "/v2/").status == 401
    subprocess.run([str(VENV_BIN / "dockyard"), "passwd", str(htpasswd), "newcomer",
                    "--password-stdin"], input=b"first-pw\n", check=True, capture_output=True)
    assert "first-pw" not in htpasswd.read_text()
    _eventually(lambda: newcomer.request("GET", "/v2/").status == 200)
    # A changed password: the old one stops working (the verified-credential cache
    # is dropped with the old file).
    subprocess.run([str(VENV_BIN / "dockyard"), "passwd", str(htpasswd), "newcomer",
                    "--password-stdin"], input=b"second-pw\n", check=True,
                   capture_output=True)
    _eventually(lambda: newcomer.request("GET", "/v2/").status == 401)
    assert AuthClient(secured.url, basic("newcomer", "second-pw")).request(
        "GET", "/v2/").status == 200


def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
