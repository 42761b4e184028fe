"""Properties: an identity never reaches a repository its rules do not grant.

hypothesis draws rule sets (globs, users, groups, logged-in and anonymous
grants) and, for each, a `dockyard serve` is started with them; then it draws
requests (who, with a password or a token for some scopes, which repository,
which operation) and compares each answer with an oracle written apart from
`shared.auth.policy`. Catalog and search answers must name exactly the
existing repositories the caller may pull.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.secured import AuthClient, basic, start_secured

USERS = ["u1", "u2", "u3"]
GROUPS = {"g1": ["u1", "u2"]}
PASSWORDS = {u: f"{u}-pw" for u in [*USERS, "root"]}
EXISTING = ["a/x", "a/y", "b/x", "c/z", "pub/q"]
REPOS = [*EXISTING, "a/missing", "c/nope"]
# The oracle's reading of each glob, written without regexes.
PATTERNS = {
    "a/**": lambda r: r.startswith("a/"),
    "b/**": lambda r: r.startswith("b/"),
    "pub/**": lambda r: r.startswith("pub/"),
    "**": lambda r: True,
    "a/x": lambda r: r == "a/x",
    "c/*": lambda r: r.startswith("c/") and "/" not in r[2:],
    "*/x": lambda r: r.count("/") == 1 and r.endswith("/x"),
    "a/?": lambda r: len(r) == 3 and r.startswith("a/"),
}
ACTIONS = ["pull", "push", "delete"]
NEEDS = {"get": {"pull"}, "head": {"pull"}, "tags": {"pull"}, "referrers": {"pull"},
         "blob": {"pull"}, "upload": {"pull", "push"}, "delete": {"delete"}}

actions = st.lists(st.sampled_from(ACTIONS), unique=True, max_size=3)
rule = st.fixed_dictionaries({
    "repositories": st.lists(st.sampled_from(sorted(PATTERNS)), min_size=1, max_size=2,
                             unique=True),
    "users": st.lists(st.sampled_from(USERS), unique=True, max_size=2),
    "groups": st.lists(st.just("g1"), max_size=1),
    "actions": actions, "anonymous": actions, "authenticated": actions,
}).filter(lambda r: r["actions"] or not (r["users"] or r["groups"]))
request = st.tuples(st.sampled_from([None, *USERS]), st.sampled_from(["basic", "token"]),
                    st.lists(st.tuples(st.sampled_from(REPOS), actions), max_size=2),
                    st.sampled_from(REPOS), st.sampled_from(sorted(NEEDS)))


def oracle(rules: list[dict[str, Any]], user: str | None, repo: str) -> set[str]:
    granted: set[str] = set()
    groups = {g for g, members in GROUPS.items() if user in members}
    for r in rules:
        if not any(PATTERNS[p](repo) for p in r["repositories"]):
            continue
        granted |= set(r["anonymous"])
        if user is not None:
            granted |= set(r["authenticated"])
            if user in r["users"] or groups & set(r["groups"]):
                granted |= set(r["actions"])
    return granted


def _listing(client: AuthClient) -> tuple[set[str], set[str]]:
    r = client.request("GET", "/v2/_catalog?n=2")
    names: list[str] = []
    while True:
        assert r.status == 200, (r.status, r.data)
        names += json.loads(r.data)["repositories"]
        link = r.headers.get("Link")
        if not link:
            break
        r = client.request("GET", link[1:link.index(">")])
    found = json.loads(client.request("GET", "/v1/search?q=&n=100").data)
    return set(names), {x["name"] for x in found["results"]}


# Each example starts a registry: no shrinking (the failure message names the
# rules and the request), a handful of examples per run.
@settings(max_examples=int(os.environ.get("DOCKYARD_AUTH_EXAMPLES", "4")), deadline=None,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(rules=st.lists(rule, min_size=1, max_size=4), data=st.data())
def test_no_identity_reaches_what_its_rules_do_not_grant(rules: list[dict[str, Any]],
                                                         data: st.DataObject) -> None:
    everything = {"repositories": ["**"], "users": ["root"], "actions": ACTIONS}
    with tempfile.TemporaryDirectory(prefix="dockyard-prop-") as tmp:
        server = start_secured(Path(tmp), rules=[*rules, everything],
                               auth={"groups": GROUPS}, passwords=PASSWORDS)
        try:
            _check(server, rules, data)
        finally:
            server.stop()


def _check(server: Any, rules: list[dict[str, Any]], data: st.DataObject) -> None:
    root = AuthClient(server.url, basic("root", PASSWORDS["root"]))
    digests = {}
    for repo in EXISTING:
        digests[repo] = root.push_image(repo, "v1")[0]
    layer = root.random_blob("a/x")[0]
    plain = AuthClient(server.url)
    for user, via, scopes, repo, op in data.draw(st.lists(request, min_size=30,
                                                          max_size=30)):
        allowed = oracle(rules, user, repo)
        if via == "token":
            token = plain.token([f"repository:{r}:{','.join(a) or 'pull'}" for r, a in scopes],
                                user, PASSWORDS.get(user or ""))
            client = AuthClient(server.url, f"Bearer {token}")
            asked: dict[str, set[str]] = {}
            for r, a in scopes:
                asked.setdefault(r, set()).update(a or ["pull"])
            allowed = allowed & asked.get(repo, set())
        else:
            client = AuthClient(server.url, basic(user, PASSWORDS[user]) if user else None)
        digest = digests.get(repo, digests["a/x"])
        method, path = {
            "get": ("GET", f"/v2/{repo}/manifests/v1"),
            "head": ("HEAD", f"/v2/{repo}/manifests/v1"),
            "tags": ("GET", f"/v2/{repo}/tags/list"),
            "referrers": ("GET", f"/v2/{repo}/referrers/{digest}"),
            "blob": ("GET", f"/v2/{repo}/blobs/{layer}"),
            "upload": ("POST", f"/v2/{repo}/blobs/uploads/"),
            "delete": ("DELETE", f"/v2/{repo}/manifests/sha256:{'0' * 64}"),
        }[op]
        r = client.request(method, path)
        if NEEDS[op] <= allowed:
            assert r.status not in (401, 403), (user, via, repo, op, rules, r.status)
        else:
            assert r.status in (401, 403), (user, via, repo, op, rules, r.status, r.data)
    # Search answers come from a snapshot that may lag the catalog by a second.
    time.sleep(1.5)
    for user in [None, *USERS]:
        client = AuthClient(server.url, basic(user, PASSWORDS[user]) if user else None)
        pullable = {r for r in EXISTING if "pull" in oracle(rules, user, r)}
        if user is None and not any(r["anonymous"] for r in rules):
            assert client.request("GET", "/v2/_catalog").status == 401
            continue
        catalog, search = _listing(client)
        assert catalog == pullable, (user, rules)
        assert search <= pullable, (user, rules)
