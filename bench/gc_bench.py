"""Garbage collection at scale, and what a collection costs the pushes around it.

    .venv/bin/python -m bench.gc_bench [--manifests 10000] [--blobs 50000] [--rounds 3]

1. Starts `dockyard serve` on a fresh data directory (no background collection).
2. Fills its storage root and its Redis directly, as pushes would have left
   them: `--manifests` manifests in 100 repositories, `--blobs` blobs in all
   (each manifest's bytes, its config and its layers), half the manifests
   tagged and half untagged, every blob linked into its repository.
3. Times `dockyard gc --grace 0 --untagged-max-age 0`, which deletes the
   untagged half and what only it needs.
4. Measures manifest PUT throughput through the router (4 threads, each PUT
   a new manifest over blobs already pushed) during a collection, then for
   as long again with none, `--rounds` times: at nice 10, as the storage
   processes' background runs are, and at nice 0. Each collection reads and
   marks everything again and deletes the manifests the PUTs untagged.

Prints one JSON document: the collection's duration, CPU time and counts,
and each pair of throughputs with the median ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from services.index.store import IndexStore
from services.storage.blobstore import BlobStore
from services.storage.paths import Layout
from shared.validation import Digest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKYARD = str(Path(sys.executable).parent / "dockyard")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
THREADS = 4


def _blob(blobs: BlobStore, repo: str, data: bytes) -> dict[str, Any]:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    path = blobs.layout.blob(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    link = blobs.layout.layer_link(repo, digest)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.touch()
    return {"mediaType": OCI_LAYER, "digest": str(digest), "size": len(data)}


def populate(root: Path, client: redis.Redis, manifests: int, blobs_total: int) -> None:
    """Files and index records exactly as pushes leave them, written directly."""
    blobs = BlobStore(Layout(root))
    index = IndexStore(client, "dockyard:")
    per_manifest = max(3, blobs_total // manifests) - 1   # config + layers; bytes are one
    repos = 100
    records = []
    for i in range(manifests):
        repo = f"bench/gc{i % repos:03d}"
        descs = [_blob(blobs, repo, os.urandom(48) + i.to_bytes(4, "big") + bytes([j]))
                 for j in range(per_manifest)]
        descs[0]["mediaType"] = OCI_CONFIG
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": descs[0], "layers": descs[1:]}).encode()
        digest = Digest("sha256", hashlib.sha256(body).hexdigest())
        blobs.layout.blob(digest).parent.mkdir(parents=True, exist_ok=True)
        blobs.layout.blob(digest).write_bytes(body)
        link = blobs.layout.manifest_link(repo, digest)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(OCI_MANIFEST, link)
        records.append({"repo": repo, "digest": str(digest),
                        "tag": f"t{i}" if i % 2 == 0 else None, "media_type": OCI_MANIFEST,
                        "size": len(body), "artifact_type": None, "annotations": {},
                        "subject": None, "refs": [d["digest"] for d in descs]})
        if len(records) == 500:
            index.put_manifests(records)
            records = []
    if records:
        index.put_manifests(records)


class Pusher:
    """Manifest PUTs through the router, each a new manifest over the same blobs."""

    def __init__(self, base: str) -> None:
        self.host, self.port = base.removeprefix("http://").split(":")
        conn = self._conn()
        self.layers = []
        for n in range(2):
            data = f"bench layer {n}".encode() * 10
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            conn.request("POST", f"/v2/bench/put/blobs/uploads/?digest={digest}", body=data)
            assert conn.getresponse().read() is not None
            self.layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": len(data)})
        self.layers[0]["mediaType"] = OCI_CONFIG

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, int(self.port), timeout=60)

    def run(self, seconds: float, stop: threading.Event | None = None) -> float:
        """PUTs per second over `seconds` (or until `stop`), from THREADS threads."""
        counts = [0] * THREADS
        errors = [0] * THREADS
        deadline = time.monotonic() + seconds

        def loop(k: int) -> None:
            conn = self._conn()
            n = 0
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": self.layers[0], "layers": self.layers[1:],
                                   "annotations": {"n": f"{k}-{n}-{time.time()}"}}).encode()
                conn.request("PUT", f"/v2/bench/put/manifests/w{k}-{n % 50}", body=body,
                             headers={"Content-Type": OCI_MANIFEST})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 201:
                    counts[k] += 1
                else:
                    errors[k] += 1
                n += 1

        started = time.monotonic()
        threads = [threading.Thread(target=loop, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if sum(errors):
            raise RuntimeError(f"{sum(errors)} manifest PUTs failed")
        return sum(counts) / (time.monotonic() - started)


def cpu_seconds() -> float:
    """CPU time of the children waited for so far (the collections)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gc(data_dir: Path, nice: int = 0) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    out = subprocess.run([DOCKYARD, "gc", "--data-dir", str(data_dir), "--grace", "0",
                          "--untagged-max-age", "0", "--json", "--nice", str(nice)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--blobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from bench.servers import free_port  # the harness's port helper

    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        env = {**os.environ, "DOCKYARD_GC_INTERVAL": "0", "DOCKYARD_LOG_ACCESS": "false"}
        serve = subprocess.Popen([DOCKYARD, "serve", "--data-dir", str(data_dir), "--port",
                                  str(port)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base)
            served = json.loads((data_dir / "serve.json").read_text())
            client = redis.Redis.from_url(served["redis"])
            t0 = time.monotonic()
            populate(Path(served["storage_root"]), client, args.manifests, args.blobs)
            filled = time.monotonic() - t0
            pusher = Pusher(base)
            pusher.run(2.0)   # warm-up: connections, caches
            cpu = cpu_seconds()
            report, took = gc(data_dir)
            cpu = cpu_seconds() - cpu
            # The machine's other load drifts over minutes, so each collection's
            # window is paired with a quiet window of the same length right after it.
            during: dict[str, Any] = {}
            for nice in (10, 0):
                pairs = []
                for _ in range(args.rounds):
                    stop = threading.Event()
                    rates: list[float] = []
                    bg = threading.Thread(target=lambda s=stop, r=rates:
                                          r.append(pusher.run(3600, s)))
                    bg.start()
                    _, window = gc(data_dir, nice)
                    stop.set()
                    bg.join()
                    pairs.append((pusher.run(window), rates[0], window))
                ratios = sorted(d / q for q, d, _ in pairs)
                during[f"nice_{nice}"] = {
                    "pairs_put_per_second_quiet_then_during": [
                        [round(q, 1), round(d, 1)] for q, d, _ in pairs],
                    "collection_seconds": [round(w, 1) for _, _, w in pairs],
                    "median_ratio": round(ratios[len(ratios) // 2], 3)}
        finally:
            os.killpg(serve.pid, 15)
            serve.wait(30)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "manifests": args.manifests, "blobs": args.blobs, "fill_seconds": round(filled, 1),
        "collection": {"seconds": round(took, 2), "cpu_seconds": round(cpu, 2),
                       "counts": report["counts"],
                       "bytes": report["bytes"]},
        "put_during_collections": during,
    }, indent=1))


def _wait(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    host, port = base.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} not ready")


if __name__ == "__main__":
    main()
