"""What the pull-through cache costs a blob pull, against the alternatives.

One `dockyard serve` with ``up/*`` mirroring a local distribution 2.8.2
(Debian's ``docker-registry``), both on loopback. Each round pushes a fresh
random blob of ``--size`` MiB to the upstream and to an ordinary dockyard
repository, then times four GETs of it, each read to the end and hashed:

- direct:   from the upstream itself;
- first:    through dockyard, uncached (fetched, verified and stored while streamed);
- cached:   through dockyard again, from its cache;
- ordinary: the same bytes pushed to an ordinary dockyard repository.

The medians are reported with the ratios the issue sets as targets:
cached / ordinary (within 10%) and first / direct (within 20%).
``--backend s3`` keeps dockyard's blobs in a bucket of a SeaweedFS the bench
starts on loopback (the first pull then also uploads the blob to the bucket
before its last byte goes out).

    .venv/bin/python bench/pull_through.py [--rounds 5] [--size 64] [--backend s3]
                                           [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import seaweedfs as seaweed
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Pusher, UpstreamRegistry


def timed_get(http: urllib3.PoolManager, url: str, digest: str) -> float:
    started = time.perf_counter()
    r = http.request("GET", url, preload_content=False)
    assert r.status == 200, (url, r.status)
    h = hashlib.sha256()
    for chunk in r.stream(1024 * 1024):
        h.update(chunk)
    r.release_conn()
    elapsed = time.perf_counter() - started
    assert "sha256:" + h.hexdigest() == digest, url
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="blob size, MiB")
    parser.add_argument("--backend", choices=("filesystem", "s3"), default="filesystem")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        env: dict[str, str] = {}
        if args.backend == "s3":
            weed = seaweed.SeaweedServer(root / "seaweedfs").start()
            stack.callback(weed.stop)
            env = seaweed.dockyard_env(weed.access, seaweed.new_bucket_name("bench"))
        upstream = UpstreamRegistry(root / "upstream").start()
        config = root / "dockyard.yml"
        config.write_text(json.dumps({"proxy": {"upstreams": [
            {"prefix": "up", "url": upstream.url}]}}))
        server = Dockyard(root / "data", config=config, env=env).start()
        try:
            pusher = Pusher(upstream.url)
            local = RegistryClient(server.url)
            http = urllib3.PoolManager(retries=False, timeout=300)
            times: dict[str, list[float]] = {"direct": [], "first": [], "cached": [],
                                             "ordinary": []}
            for i in range(args.rounds):
                data = os.urandom(args.size * 1024 * 1024)
                digest = pusher.blob("bench/blob", data)
                local.push_blob("bench/local", data)
                del data
                order = [("direct", f"{upstream.url}/v2/bench/blob/blobs/{digest}"),
                         ("first", f"{server.url}/v2/up/bench/blob/blobs/{digest}"),
                         ("cached", f"{server.url}/v2/up/bench/blob/blobs/{digest}"),
                         ("ordinary", f"{server.url}/v2/bench/local/blobs/{digest}")]
                for kind, url in order:
                    times[kind].append(timed_get(http, url, digest))
                print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms"
                                                     for k, v in times.items()))
        finally:
            server.stop()
            upstream.stop()

    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
        "cpus": os.cpu_count(), "size_mib": args.size, "rounds": args.rounds,
        "backend": args.backend,
        "median_ms": {k: round(v * 1000, 1) for k, v in medians.items()},
        "cached_vs_ordinary": round(medians["cached"] / medians["ordinary"], 3),
        "first_vs_direct": round(medians["first"] / medians["direct"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
