"""Webhooks through a real `dockyard serve` and real receivers on loopback: the
envelope of a push, its signature and headers, the actor, filters, batching,
pull and delete events, retries with backoff, dead letters and their replay,
and an endpoint that stalls while another one and the registry carry on."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.notifications.delivery import verify
from tests.integration.helpers import direct, service_url, unique_repo, wait_until
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import OCI_MANIFEST, RegistryClient
from tests.support.webhook_receiver import Receiver, metric
from tests.support.webhooks import ManifestPusher, deployment, events_cli, metrics_text

SECRET = "s3cret-for-tests"


def of_repo(receiver: Receiver, repo: str) -> list[dict[str, Any]]:
    return [e for e in receiver.delivered() if e["target"].get("repository") == repo]


def wait_events(receiver: Receiver, repo: str, count: int,
                timeout: float = 15) -> list[dict[str, Any]]:
    wait_until(lambda: len(of_repo(receiver, repo)) >= count, timeout,
               what=f"{count} events of {repo}")
    return of_repo(receiver, repo)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One deployment: `all` gets everything, signed; `team` only pushes to team/*."""
    every, team = Receiver().start(), Receiver().start()
    server = deployment(tmp_path_factory.mktemp("hooks"), [
        {"name": "all", "url": every.url, "secret": SECRET, "batch_size": 50, "timeout": 2,
         "headers": {"Authorization": "Bearer t0ken"}},
        {"name": "team", "url": team.url, "actions": ["push"], "repositories": ["team/*"],
         "timeout": 1},
    ], manifest_pull=True, claim_idle=4)
    server.start()
    try:
        yield {"server": server, "all": every, "team": team,
               "client": RegistryClient(server.url)}
    finally:
        server.stop()
        every.stop()
        team.stop()


def test_a_push_sends_distributions_envelope(hooks: dict[str, Any]) -> None:
    client: RegistryClient = hooks["client"]
    repo = unique_repo("team")
    digest, body = client.push_image(repo, "v1")
    (event,) = wait_events(hooks["all"], repo, 1)
    server: Dockyard = hooks["server"]
    assert uuid.UUID(event["id"])
    assert event["action"] == "push"
    assert event["target"] == {
        "mediaType": OCI_MANIFEST, "size": len(body), "digest": digest, "length": len(body),
        "repository": repo, "url": f"{server.url}/v2/{repo}/manifests/{digest}", "tag": "v1"}
    request = event["request"]
    assert request["method"] == "PUT" and request["host"] == server.addr
    assert request["addr"] == "127.0.0.1" and request["useragent"].startswith("python-urllib3")
    assert request["id"]
    assert event["actor"] == {}
    assert set(event["source"]) == {"addr", "instanceID"}

    post = next(p for p in hooks["all"].posts if any(e["id"] == event["id"] for e in p.events))
    assert post.headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    assert post.headers["Authorization"] == "Bearer t0ken"
    assert post.headers["User-Agent"] == "dockyard-notifications"
    assert verify(SECRET, post.body, post.headers["X-Dockyard-Webhook-Signature"])
    assert not verify("wrong", post.body, post.headers["X-Dockyard-Webhook-Signature"])
    # No secret, no signature.
    wait_events(hooks["team"], repo, 1)
    (team_post,) = [p for p in hooks["team"].posts
                    if any(e["target"]["repository"] == repo for e in p.events)]
    assert "X-Dockyard-Webhook-Signature" not in team_post.headers


def test_the_actor_is_the_identity_the_router_passes_on(hooks: dict[str, Any]) -> None:
    """Storage reads X-Dockyard-Identity (set by the router's authentication; a
    client's own X-Dockyard-* headers never get past the router)."""
    client: RegistryClient = hooks["client"]
    repo = unique_repo("actor")
    storage = service_url(hooks["server"], "storage")
    for tag, identity in (("as-alice", "alice"), ("anonymous", "")):
        body = client.image_manifest(repo)
        r = direct("PUT", f"{storage}/v2/{repo}/manifests/{tag}", body=body,
                   headers={"Content-Type": OCI_MANIFEST, "X-Dockyard-Identity": identity,
                            "X-Request-Id": f"req-{tag}", "X-Forwarded-For": "10.1.2.3"},
                   signer=hooks["server"].service_key())
        assert r.status == 201
    alice, anonymous = wait_events(hooks["all"], repo, 2)
    assert alice["actor"] == {"name": "alice"} and alice["request"]["id"] == "req-as-alice"
    assert alice["request"]["addr"] == "10.1.2.3"
    assert anonymous["actor"] == {}
    # Through the router, a client cannot claim an identity.
    body = client.image_manifest(repo)
    r = client.request("PUT", f"/v2/{repo}/manifests/forged", body=body,
                       headers={"Content-Type": OCI_MANIFEST, "X-Dockyard-Identity": "root"})
    assert r.status == 201
    assert wait_events(hooks["all"], repo, 3)[-1]["actor"] == {}


def test_filters_by_action_and_repository(hooks: dict[str, Any]) -> None:
    client: RegistryClient = hooks["client"]
    inside, outside = unique_repo("team"), unique_repo("other")
    client.push_image(inside, "v1")
    client.push_image(outside, "v1")
    assert client.get_manifest(inside, "v1").status == 200
    wait_events(hooks["all"], inside, 2)  # the push and the pull
    wait_events(hooks["all"], outside, 1)
    wait_events(hooks["team"], inside, 1)
    time.sleep(0.3)
    assert [e["action"] for e in of_repo(hooks["team"], inside)] == ["push"]
    assert of_repo(hooks["team"], outside) == []
    assert metric(metrics_text(hooks["server"]), "dockyard_notifications_filtered_total",
                  "team") >= 2


def test_every_manifest_get_is_a_pull_even_with_the_router_cache(hooks: dict[str, Any]) -> None:
    client: RegistryClient = hooks["client"]
    repo = unique_repo("pull")
    digest, _ = client.push_image(repo, "v1")
    for _ in range(3):
        assert client.get_manifest(repo, "v1").status == 200
    assert client.request("HEAD", f"/v2/{repo}/manifests/v1").status == 200
    events = wait_events(hooks["all"], repo, 4)
    time.sleep(0.3)
    events = of_repo(hooks["all"], repo)
    assert [e["action"] for e in events] == ["push", "pull", "pull", "pull"]
    assert all(e["target"]["digest"] == digest and e["target"]["tag"] == "v1"
               and e["request"]["method"] == "GET" for e in events[1:])


def test_tag_and_manifest_deletes(hooks: dict[str, Any]) -> None:
    client: RegistryClient = hooks["client"]
    repo = unique_repo("del")
    digest, body = client.push_image(repo, "v1")
    assert client.put_manifest(repo, "v2", body).status == 201
    assert client.request("DELETE", f"/v2/{repo}/manifests/v1").status == 202
    assert client.request("DELETE", f"/v2/{repo}/manifests/v1").status == 404  # no event
    assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}").status == 202
    events = wait_events(hooks["all"], repo, 5)
    time.sleep(0.3)
    events = of_repo(hooks["all"], repo)
    assert [(e["action"], e["target"]) for e in events[2:]] == [
        ("delete", {"repository": repo, "tag": "v1"}),
        ("delete", {"digest": digest, "repository": repo}),
        ("delete", {"repository": repo, "tag": "v2"}),  # removed with the manifest
    ]
    assert len({e["id"] for e in events}) == 5


def test_a_repository_delete_reports_its_manifests_tags_and_itself(
        hooks: dict[str, Any]) -> None:
    client: RegistryClient = hooks["client"]
    repo = unique_repo("repodel")
    digest, _ = client.push_image(repo, "v1")
    wait_events(hooks["all"], repo, 1)  # the manifest push
    r = client.request("DELETE", f"/api/v1/repositories/{repo}")
    assert r.status == 202, r.data
    events = wait_events(hooks["all"], repo, 4)
    time.sleep(0.3)
    events = of_repo(hooks["all"], repo)
    assert [(e["action"], e["target"]) for e in events[1:]] == [
        ("delete", {"digest": digest, "repository": repo}),
        ("delete", {"repository": repo, "tag": "v1"}),  # removed with the manifest
        ("delete", {"repository": repo}),  # the repository itself (docs/webhooks.md)
    ]


def test_retention_and_the_collector_report_their_deletes(
        hooks: dict[str, Any], tmp_path: Path) -> None:
    """What `dockyard gc` deletes, no client asked for; webhook consumers still see
    it: the tag a retention policy removes, then the manifest it left untagged."""
    client: RegistryClient = hooks["client"]
    server: Dockyard = hooks["server"]
    repo = unique_repo("gc")
    old, _ = client.push_image(repo, "old")
    time.sleep(0.05)
    new, _ = client.push_image(repo, "new")
    assert server.config is not None
    config = yaml.safe_load(server.config.read_text())
    config.setdefault("gc", {})["retention"] = [f"{repo} keep_last=1"]
    gc_config = tmp_path / "gc.yml"
    gc_config.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [str(VENV_BIN / "dockyard"), "gc", "--config", str(gc_config), "--data-dir",
         str(server.data_dir), "--grace", "0", "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **server.env})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {(i["kind"], i["name"]) for i in report["items"] if i["repository"] == repo} >= {
        ("tag", "old"), ("manifest", old)}

    pushes_and_deletes = wait_events(hooks["all"], repo, 4)
    deletes = [e for e in pushes_and_deletes if e["action"] == "delete"]
    assert [e["target"] for e in deletes] == [
        {"repository": repo, "tag": "old"}, {"repository": repo, "digest": old}]
    for event in deletes:
        assert event["actor"] == {"name": "dockyard-gc"}
        assert event["request"]["useragent"] == "dockyard-gc"
        assert event["request"]["method"] == "DELETE"
    assert len({e["request"]["id"] for e in deletes}) == 1, "one run, one request id"
    assert client.get_manifest(repo, "new").status == 200
    assert client.get_manifest(repo, new).status == 200


def test_events_queued_meanwhile_go_out_together_in_order(hooks: dict[str, Any]) -> None:
    """While one POST is in flight, the next events queue up and leave as one envelope."""
    client: RegistryClient = hooks["client"]
    repo = unique_repo("batch")
    pusher = ManifestPusher(client, repo)
    receiver: Receiver = hooks["all"]
    receiver.stall = 0.6  # below the endpoint's timeout: slow, not failing
    try:
        digests = []
        for n in range(12):
            status, digest, _ = pusher.push(n)
            assert status == 201
            digests.append(digest)
    finally:
        receiver.stall = 0.0
    events = wait_events(receiver, repo, 12)
    # (A POST slower than the timeout on a loaded machine would be sent again:
    # compare first deliveries.)
    seen: set[str] = set()
    firsts = [e for e in events if e["id"] not in seen and not seen.add(e["id"])]
    assert [e["target"]["digest"] for e in firsts] == digests
    sizes = [sum(e["target"].get("repository") == repo for e in p.events)
             for p in receiver.posts]
    assert max(sizes) >= 5, sizes


def test_retries_back_off_through_errors_refusals_and_hangs(tmp_path: Path) -> None:
    receiver = Receiver(status=500).start()
    port = receiver.port
    server = deployment(tmp_path, [{"name": "flaky", "url": receiver.url, "timeout": 0.5,
                                    "backoff_initial": 0.2, "backoff_max": 0.8}],
                        claim_idle=2)
    server.start()
    try:
        repo = unique_repo("retry")
        digest, _ = RegistryClient(server.url).push_image(repo, "v1")
        wait_until(lambda: len(receiver.posts) >= 5, 15, what="5 failed POSTs")
        times = [p.at for p in receiver.posts[:5]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Doubling from backoff_initial up to backoff_max.
        for gap, expected in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
            assert expected * 0.9 <= gap <= expected + 1.0, gaps
        # Down: connections refused.
        receiver.stop()
        wait_until(lambda: "connection refused" in server.log_text(), 10,
                   what="a refused connection")
        # Hanging past the endpoint's timeout.
        receiver = Receiver(status=200, stall=2.0).start(port)
        wait_until(lambda: len(receiver.posts) >= 1, 10, what="a POST to the hanging receiver")
        wait_until(lambda: receiver.posts[0].answered != 0, 5, what="the hang's end")
        assert receiver.posts[0].answered == -1  # the dispatcher gave up after its timeout
        receiver.stall = 0.0
        wait_until(lambda: any(p.at > receiver.posts[0].at + 0.1 for p in receiver.posts), 10,
                   what="a POST after the hang")
        (event,) = wait_events(receiver, repo, 1)
        assert event["target"]["digest"] == digest
        # The same event in every attempt: one id for receivers to deduplicate by.
        assert {e["id"] for p in receiver.posts for e in p.events} == {event["id"]}
        text = metrics_text(server)
        assert metric(text, "dockyard_notifications_delivered_total", "flaky") == 1
        assert metric(text, "dockyard_notifications_failed_total", "flaky") >= 6
        assert metric(text, "dockyard_notifications_retries_total", "flaky") >= 6
        assert metric(text, "dockyard_notifications_queued", "flaky") == 0
        log = server.log_text()
        assert "endpoint flaky: 1 events not delivered (HTTP 500, attempt 1)" in log
        assert "connection refused" in log and "timed out after 0.5s" in log
    finally:
        server.stop()
        receiver.stop()


def test_too_old_events_are_dead_lettered_reported_and_replayed(tmp_path: Path) -> None:
    failing, healthy = Receiver(status=503).start(), Receiver().start()
    server = deployment(tmp_path, [
        {"name": "down", "url": failing.url, "max_age": 1, "backoff_initial": 0.2,
         "backoff_max": 0.4, "timeout": 1},
        {"name": "up", "url": healthy.url, "timeout": 1},
    ], claim_idle=2)
    server.start()
    try:
        repo = unique_repo("dead")
        client = RegistryClient(server.url)
        client.push_image(repo, "a")
        client.push_image(repo, "b")
        wait_until(lambda: "2 events older than max_age" in server.log_text()
                   or server.log_text().count("older than max_age") >= 2, 15,
                   what="dead-lettering")
        status = events_cli(server, "status")
        assert status.returncode == 0, status.stderr
        row = next(line.split() for line in status.stdout.splitlines()
                   if line.startswith("down "))
        assert row[1:5] == ["0", "0", "0", "2"], status.stdout  # queued pending lag dead
        assert metric(metrics_text(server), "dockyard_notifications_dead_lettered_total",
                      "down") == 2
        assert metric(metrics_text(server), "dockyard_notifications_dead_letters", "down") == 2
        originals = [e["id"] for e in wait_events(healthy, repo, 2)]

        failing.status = 200
        replay = events_cli(server, "replay", "down")
        assert replay.returncode == 0 and "replayed 2" in replay.stdout, replay
        replayed = wait_events(failing, repo, 2)
        assert [e["id"] for e in replayed] == originals
        time.sleep(0.5)
        assert len(of_repo(healthy, repo)) == 2  # a replay is for its endpoint only
        assert "down " in events_cli(server, "status").stdout
        bad = events_cli(server, "replay", "nope")
        assert bad.returncode != 0 and "no endpoint named 'nope'" in bad.stderr
    finally:
        server.stop()
        failing.stop()
        healthy.stop()


def test_a_stalled_endpoint_delays_neither_another_nor_the_pushes(tmp_path: Path) -> None:
    stalled, fast = Receiver(stall=30).start(), Receiver().start()
    server = deployment(tmp_path, [
        {"name": "stalled", "url": stalled.url, "timeout": 2},
        {"name": "fast", "url": fast.url, "timeout": 2},
    ], claim_idle=5)
    server.start()
    try:
        client = RegistryClient(server.url)
        repo = unique_repo("iso")
        pusher = ManifestPusher(client, repo)
        latencies, pushed_at = [], []
        for n in range(20):
            started = time.monotonic()
            assert pusher.push(n)[0] == 201
            latencies.append(time.monotonic() - started)
            pushed_at.append(time.time())
        events = wait_events(fast, repo, 20, timeout=10)
        last_arrival = max(p.at for p in fast.posts)
        # The fast endpoint has everything well within the stalled one's timeout...
        assert last_arrival - pushed_at[-1] < 2.0
        # ...while the stalled one has not had a single event taken.
        assert stalled.delivered() == []
        assert len(events) == 20
        # Pushes never wait on an endpoint: far below the stall and the timeout.
        assert statistics.median(latencies) < 0.5 and max(latencies) < 2.0, latencies
    finally:
        server.stop()
        stalled.stop()
        fast.stop()


def test_bad_endpoint_config_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    from tests.support.processes import VENV_BIN
    from tests.support.webhook_receiver import write_config

    path = write_config(tmp_path / "bad.yml", [{"name": "x", "url": "http://h/",
                                                "headers": {"X-A": "a\nb"}}])
    for argv in (["config", "check", str(path)],
                 ["serve", "--config", str(path), "--data-dir", str(tmp_path / "d")]):
        result = subprocess.run([str(VENV_BIN / "dockyard"), *argv], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode != 0
        assert ("configuration error: notifications.endpoints[x].headers.X-A: a header value "
                "may not hold a line break or NUL") in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unreachable_endpoint_is_reported_and_harms_nothing(tmp_path: Path) -> None:
    receiver = Receiver().start()
    port = receiver.port
    receiver.stop()
    server = deployment(tmp_path, [{"name": "nobody", "url": f"http://127.0.0.1:{port}/x"}])
    server.start()
    try:
        wait_until(lambda: "endpoint nobody (http://127.0.0.1:" in server.log_text(), 10,
                   what="the unreachable endpoint's warning")
        assert "is not reachable now" in server.log_text()
        repo = unique_repo("unreach")
        RegistryClient(server.url).push_image(repo, "v1")
        time.sleep(1)
        assert server.child("notifications").is_running()
        assert json.loads(direct("GET", server.url + "/readyz").data)["ready"]
    finally:
        server.stop()


def test_the_actor_is_the_authenticated_user(tmp_path: Path) -> None:
    import yaml

    from tests.support.secured import AuthClient, basic, write_htpasswd

    receiver = Receiver().start()
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": "alice-pw", "jörg": "bob-pw"})
    config = tmp_path / "dockyard.yml"
    config.write_text(yaml.safe_dump({
        "auth": {"htpasswd": str(htpasswd), "mode": "basic"},
        "access": [{"repositories": ["**"], "users": ["alice", "jörg"],
                    "actions": ["pull", "push", "delete"]}],
        "notifications": {"endpoints": [{"name": "audit", "url": receiver.url}]},
    }))
    server = Dockyard(tmp_path / "data", config=config).start()
    try:
        repo = unique_repo("authn")
        for n, (user, password) in enumerate((("alice", "alice-pw"), ("jörg", "bob-pw"))):
            AuthClient(server.url, basic(user, password)).push_image(repo, f"t{n}")
        denied = RegistryClient(server.url).put_manifest(repo, "anon", b"{}")
        assert denied.status == 401
        alice, jorg = wait_events(receiver, repo, 2)
        assert alice["actor"] == {"name": "alice"}
        assert jorg["actor"] == {"name": "jörg"}  # percent-encoded between the services
        time.sleep(0.5)
        assert len(of_repo(receiver, repo)) == 2  # a refused push makes no event
    finally:
        server.stop()
        receiver.stop()


def test_an_https_endpoint_with_a_private_ca(tmp_path: Path) -> None:
    """TLS with the system's trust store, which SSL_CERT_FILE points at a private CA."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    trusted, untrusted = Receiver().start(tls=tls), Receiver().start(tls=tls)
    server = deployment(tmp_path, [
        {"name": "trusted", "url": trusted.url, "timeout": 2},
        {"name": "untrusted", "url": untrusted.url.replace("127.0.0.1", "localhost"),
         "timeout": 2},
    ], claim_idle=4)
    server.env = {"SSL_CERT_FILE": str(cert)}
    server.start()
    try:
        repo = unique_repo("tls")
        digest, _ = RegistryClient(server.url).push_image(repo, "v1")
        (event,) = wait_events(trusted, repo, 1)
        assert event["target"]["digest"] == digest
        # The certificate names 127.0.0.1 only: "localhost" fails verification.
        wait_until(lambda: "endpoint untrusted: 1 events not delivered" in server.log_text(),
                   15, what="a refused certificate")
        assert untrusted.delivered() == []
    finally:
        server.stop()
        trusted.stop()
        untrusted.stop()
