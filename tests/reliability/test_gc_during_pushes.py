"""Collections back to back while several threads push without pause, with and
without kill -9 of the collector and of storage.

Every collection runs with no grace period and deletes untagged manifests at
once, the harshest settings: only the fences (`services.storage.fences`) stand
between a push in flight and the sweep. Afterwards every acknowledged push
pulls back byte for byte, and after a last collection nothing that no tag
reaches is left on disk.
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
import urllib3

from tests.reliability.helpers import (
    assert_blobs_intact,
    assert_no_internal_errors,
    assert_pullable,
    storage_root,
)
from tests.support.processes import VENV_BIN, Dockyard, wait_http
from tests.support.registry_client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    sha256,
)

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
        n += 1


def gc_argv(d: Dockyard) -> list[str]:
    return [str(VENV_BIN / "dockyard"), "gc", "--data-dir", str(d.data_dir), "--grace", "0",
            "--untagged-max-age", "0", "--json"]


def collect_loop(d: Dockyard, stop: threading.Event, runs: list[int],
                 kill_collector: bool) -> None:
    rng = random.Random(7)
    while not stop.is_set() and len(runs) < 60:
        proc = subprocess.Popen(gc_argv(d), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kill_collector and rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
        runs.append(proc.wait(120))


def kill_storage_loop(d: Dockyard, stop: threading.Event, kills: list[int]) -> None:
    rng = random.Random(11)
    while not stop.wait(rng.uniform(1.0, 3.0)) and len(kills) < 5:
        pid = d.kill("storage")
        kills.append(pid)
        d.wait_restarted("storage", pid, timeout=30)


def final_collection(d: Dockyard) -> None:
    out = subprocess.run(gc_argv(d), capture_output=True, text=True, timeout=120)
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
    root = storage_root(d)
    on_disk = assert_blobs_intact(root)
    blobs, links = reachable_files(state)
    assert on_disk == blobs, f"unreachable blobs left: {len(on_disk - blobs)}"
    found_links = set()
    for path in (root / "repositories").rglob("_layers/*/*"):
        name = str(path.parent.parent.parent.relative_to(root / "repositories"))
        found_links.add((name, f"{path.parent.name}:{path.name}"))
    assert found_links == links
    manifests = {f"{p.parent.name}:{p.name}"
                 for p in (root / "repositories").rglob("_manifests/*/*")}
    assert manifests == {sha256(b) for b in state.values()}
    assert served(client, pushes) == state
    assert_no_internal_errors(d)


def run_race(d: Dockyard, *, kill_collector: bool, kill_storage: bool) -> tuple[Pushes, list]:
    pushes = Pushes()
    stop = threading.Event()
    runs: list[int] = []
    kills: list[int] = []
    threads = [threading.Thread(target=push_loop, args=(d.url, i, pushes, stop))
               for i in range(THREADS)]
    threads.append(threading.Thread(target=collect_loop, args=(d, stop, runs, kill_collector)))
    if kill_storage:
        threads.append(threading.Thread(target=kill_storage_loop, args=(d, stop, kills)))
    for t in threads:
        t.start()
    time.sleep(PUSH_SECONDS)
    stop.set()
    for t in threads:
        t.join(180)
        assert not t.is_alive()
    wait_http(d.url + "/readyz", 30)
    print(f"{len(pushes.acknowledged)} tags acknowledged, {pushes.refused} pushes refused, "
          f"{len(runs)} collections, {len(kills)} storage kills")
    assert len(runs) >= 3, runs
    assert len(pushes.acknowledged) >= 20, len(pushes.acknowledged)
    return pushes, runs


@pytest.mark.slow
def test_collections_back_to_back_while_pushing(fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.env.update(GC_ENV)
    d = fresh_dockyard.start()
    pushes, runs = run_race(d, kill_collector=False, kill_storage=False)
    assert all(code == 0 for code in runs), runs
    check_outcome(d, pushes)


@pytest.mark.slow
def test_collector_and_storage_killed_at_random_moments(fresh_dockyard: Dockyard) -> None:
    fresh_dockyard.env.update(GC_ENV)
    d = fresh_dockyard.start()
    pushes, runs = run_race(d, kill_collector=True, kill_storage=True)
    assert -signal.SIGKILL in runs, "the collector was never killed"
    check_outcome(d, pushes)
