"""Collections back to back while several threads push without pause, with and
without kill -9 of the collector and of storage, on a directory and on S3.

Every collection runs with no grace period and deletes untagged manifests at
once, the harshest settings: only the fences (`services.storage.fences` on a
directory, `services.storage.redis_fences` on S3) stand between a push in flight
and the sweep. Afterwards every acknowledged push pulls back byte for byte, and
after a last collection nothing that no tag reaches is left in storage.

On S3 a killed collector leaves what flocks would not: its doom and its run lock,
in Redis, until their leases run out. So there the collector is killed at the
moment it holds a doom (seen in Redis), not at a random one, and the last
collection (which waits for the run lock) must still remove everything
unreachable while the pushes went on unharmed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis
import urllib3

from tests.reliability.helpers import (
    assert_no_internal_errors,
    assert_pullable,
    assert_stored_blobs_intact,
    stored_keys,
)
from tests.support.processes import VENV_BIN, Dockyard, wait_http
from tests.support.registry_client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    sha256,
)
from tests.support.seaweedfs import backend_env, bucket_of

THREADS = 4
PUSH_SECONDS = 20.0
MAX_PUSHES = 400
GC_ENV = {"DOCKYARD_GC_INTERVAL": "0"}
# A layer every thread pushes: the HEAD-then-skip path, and a blob shared by all.
SHARED_LAYER = b"shared layer " * 100


@dataclass
class Pushes:
    acknowledged: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # Manifest PUTs that got no 201 since the tag's last acknowledged one: a PUT
    # cut off by a killed storage may still have been recorded, so the tag may
    # name one of these instead (and then it must pull whole too).
    unanswered: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ok(r: urllib3.BaseHTTPResponse | None, status: int) -> bool:
    return r is not None and r.status == status


class Pusher:
    def __init__(self, base: str) -> None:
        self.http = urllib3.PoolManager(retries=False, timeout=30, maxsize=4)
        self.base = base

    def req(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse | None:
        try:
            return self.http.request(method, self.base + path, body=body,
                                     headers=headers or {}, redirect=False)
        except urllib3.exceptions.HTTPError:
            return None   # storage was killed mid-request: not acknowledged

    def blob(self, name: str, data: bytes, *, check_first: bool = False) -> dict | None:
        digest = sha256(data)
        if check_first and _ok(self.req("HEAD", f"/v2/{name}/blobs/{digest}"), 200):
            return {"mediaType": OCI_LAYER, "digest": digest, "size": len(data)}
        r = self.req("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data,
                     {"Content-Type": "application/octet-stream"})
        if not _ok(r, 201):
            return None
        return {"mediaType": OCI_LAYER, "digest": digest, "size": len(data)}

    def image(self, name: str, tag: str) -> tuple[bytes | None, bool]:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "nonce": os.urandom(8).hex()}).encode()
        descs = [self.blob(name, config), self.blob(name, os.urandom(300)),
                 self.blob(name, SHARED_LAYER, check_first=True)]
        if any(d is None for d in descs):
            return None, False
        descs[0]["mediaType"] = OCI_CONFIG
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descs[0], "layers": descs[1:]}).encode()
        r = self.req("PUT", f"/v2/{name}/manifests/{tag}", body,
                     {"Content-Type": OCI_MANIFEST})
        return body, _ok(r, 201)


def push_loop(base: str, worker: int, pushes: Pushes, stop: threading.Event) -> None:
    pusher = Pusher(base)
    name = f"gc-race/w{worker}"
    n = 0
    while not stop.is_set() and n < MAX_PUSHES // THREADS:
        # Half the pushes move `latest`, leaving the previous image untagged: garbage.
        tag = "latest" if n % 2 else f"t{n:04d}"
        body, acknowledged = pusher.image(name, tag)
        with pushes.lock:
            if acknowledged:
                assert body is not None
                pushes.acknowledged[(name, tag)] = body
                pushes.unanswered.pop((name, tag), None)
            else:
                pushes.refused += 1
                if body is not None:
                    pushes.unanswered.setdefault((name, tag), []).append(body)
        if not acknowledged:
            # As a client does after a 503: storage restarting is answered at once,
            # and without a pause the pushes would be spent before it is back.
            stop.wait(0.25)
        n += 1


def gc_env(d: Dockyard) -> dict[str, str]:
    """The collector runs with the dockyard's environment: its backend's settings."""
    return {**os.environ, **d.env}


def gc_argv(d: Dockyard) -> list[str]:
    return [str(VENV_BIN / "dockyard"), "gc", "--data-dir", str(d.data_dir), "--grace", "0",
            "--untagged-max-age", "0", "--json"]


class DoomWatch:
    """Watches the dooms of a dockyard on S3 in its Redis (`redis_fences`), to kill
    a collector while one of its dooms is in force."""

    # Each kill holds the next collection back for the run lock's lease (30 s).
    MAX_KILLS = 1

    def __init__(self, d: Dockyard) -> None:
        self.client = redis.Redis.from_url(d.redis_url())
        self.key = "dockyard:gc:doomed"
        self.kills_in_doom = 0

    def _latest(self) -> float:
        newest = self.client.zrange(self.key, -1, -1, withscores=True)
        return newest[0][1] if newest else 0.0

    def kill_in_doom(self, proc: subprocess.Popen[bytes], timeout: float = 200.0) -> None:
        """SIGKILL `proc` as soon as a doom newer than any before is laid; a doom
        that is still there afterwards was never lifted."""
        before = self._latest()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if self._latest() > before:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                if self._latest() > before:
                    self.kills_in_doom += 1
                return
            time.sleep(0.001)


def collect_loop(d: Dockyard, stop: threading.Event, runs: list[int],
                 kill_collector: bool, watch: DoomWatch | None = None) -> None:
    rng = random.Random(7)
    while not stop.is_set() and len(runs) < 60:
        proc = subprocess.Popen(gc_argv(d), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=gc_env(d))
        if kill_collector and rng.random() < 0.5:
            if watch is None:
                # Flocks die with their holder: any moment will do.
                time.sleep(rng.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
            elif watch.kills_in_doom < watch.MAX_KILLS:
                watch.kill_in_doom(proc)
        # On S3 a barrier waits out the registration of a PUT whose storage was
        # killed (`redis_fences.WRITER_LEASE`, 120 s).
        runs.append(proc.wait(240))


def kill_storage_loop(d: Dockyard, stop: threading.Event, kills: list[int]) -> None:
    rng = random.Random(11)
    while not stop.wait(rng.uniform(1.0, 3.0)) and len(kills) < 5:
        pid = d.kill("storage")
        kills.append(pid)
        d.wait_restarted("storage", pid, timeout=30)


def final_collection(d: Dockyard) -> None:
    out = subprocess.run(gc_argv(d), capture_output=True, text=True, timeout=180,
                         env=gc_env(d))
    assert out.returncode == 0, out.stderr


def served(client: RegistryClient, pushes: Pushes) -> dict[tuple[str, str], bytes]:
    """What each tag serves: its last acknowledged push, or a later unanswered one;
    and it pulls whole."""
    state = {}
    for key in {*pushes.acknowledged, *pushes.unanswered}:
        name, tag = key
        allowed = [*([pushes.acknowledged[key]] if key in pushes.acknowledged else []),
                   *pushes.unanswered.get(key, [])]
        r = client.get_manifest(name, tag)
        if key not in pushes.acknowledged and r.status == 404:
            continue
        assert r.status == 200 and r.data in allowed, (key, r.status, r.data[:200])
        assert_pullable(client, name, tag, r.data)
        state[key] = r.data
    return state


def reachable_files(state: dict[tuple[str, str], bytes]) -> tuple[set[str], set[tuple[str, str]]]:
    blobs: set[str] = set()
    links: set[tuple[str, str]] = set()
    for (name, _tag), body in state.items():
        doc = json.loads(body)
        blobs.add(sha256(body))
        for desc in [doc["config"], *doc["layers"]]:
            blobs.add(desc["digest"])
            links.add((name, desc["digest"]))
    return blobs, links


def check_outcome(d: Dockyard, pushes: Pushes) -> None:
    client = RegistryClient(d.url)
    assert pushes.acknowledged, "no push was acknowledged; the test proved nothing"
    state = served(client, pushes)

    final_collection(d)
    stored = assert_stored_blobs_intact(d)
    blobs, links = reachable_files(state)
    assert stored == blobs, f"unreachable blobs left: {len(stored - blobs)}"
    found_links, manifests = set(), set()
    for key in stored_keys(d, "repositories/"):
        # repositories/<name>/_layers|_manifests/<algorithm>/<hex>
        head, kind, algorithm, hexpart = key.rsplit("/", 3)
        if kind == "_layers":
            found_links.add((head.removeprefix("repositories/"), f"{algorithm}:{hexpart}"))
        elif kind == "_manifests":
            manifests.add(f"{algorithm}:{hexpart}")
    assert found_links == links
    assert manifests == {sha256(b) for b in state.values()}
    assert served(client, pushes) == state
    assert_no_internal_errors(d)


def run_race(d: Dockyard, *, kill_collector: bool, kill_storage: bool,
             watch: DoomWatch | None = None, min_runs: int = 3) -> tuple[Pushes, list]:
    pushes = Pushes()
    stop = threading.Event()
    runs: list[int] = []
    kills: list[int] = []
    threads = [threading.Thread(target=push_loop, args=(d.url, i, pushes, stop))
               for i in range(THREADS)]
    threads.append(threading.Thread(target=collect_loop,
                                    args=(d, stop, runs, kill_collector, watch)))
    if kill_storage:
        threads.append(threading.Thread(target=kill_storage_loop, args=(d, stop, kills)))
    for t in threads:
        t.start()
    time.sleep(PUSH_SECONDS)
    stop.set()
    for t in threads:
        t.join(300)
        assert not t.is_alive()
    wait_http(d.url + "/readyz", 30)
    print(f"{len(pushes.acknowledged)} tags acknowledged, {pushes.refused} pushes refused, "
          f"{len(runs)} collections, {len(kills)} storage kills")
    assert len(runs) >= min_runs, runs
    assert len(pushes.acknowledged) >= 20, len(pushes.acknowledged)
    return pushes, runs


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_collections_back_to_back_while_pushing(fresh_dockyard: Dockyard, backend: str,
                                                request: pytest.FixtureRequest) -> None:
    fresh_dockyard.env.update({**GC_ENV, **backend_env(request, backend, "gcrace")})
    d = fresh_dockyard.start()
    pushes, runs = run_race(d, kill_collector=False, kill_storage=False)
    assert all(code == 0 for code in runs), runs
    check_outcome(d, pushes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_collector_and_storage_killed_at_random_moments(fresh_dockyard: Dockyard, backend: str,
                                                        request: pytest.FixtureRequest) -> None:
    fresh_dockyard.env.update({**GC_ENV, **backend_env(request, backend, "gckill")})
    d = fresh_dockyard.start()
    watch = DoomWatch(d) if bucket_of(d.env) else None
    # On S3 a killed collector's run lock, and a killed storage's registration of a
    # manifest PUT, each hold the next collection back for their lease (30 s, 120 s):
    # one collection may be all that fits in the pushing time.
    pushes, runs = run_race(d, kill_collector=True, kill_storage=True, watch=watch,
                            min_runs=3 if watch is None else 1)
    assert -signal.SIGKILL in runs, "the collector was never killed"
    if watch is not None:
        assert watch.kills_in_doom >= 1, "no collector was killed while its doom held"
    check_outcome(d, pushes)
