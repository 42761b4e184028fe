"""The web UI's pages, timed at the size the issue names: 10,000 tags in a repository.

    .venv/bin/python -m bench.web_ui [--tags 10000] [--repos 1000] [--requests 200]

Starts `dockyard serve` (access log off, as in the main benchmark), pushes one
repository with `--tags` tags through the API (one image, tagged that many
times, 16 clients, plus the tag ``moving``) and `--repos` small repositories for the home page, then
requests each page `--requests` times from one keep-alive client and reports
the median and 95th percentile, with the 1-minute load average as the page
was timed and the CPU milliseconds the server's processes spent per request
(router, index, storage, Redis). The figure is the whole request over
loopback: the server's time plus a few tens of microseconds of HTTP. Each
answer is checked (status 200, HTML naming what the page must show).
Writes bench/results/web_ui.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ops
from bench.client import Client
from bench.cpu_per_request import _cpu
from bench.loadgen import run_concurrent
from bench.machine import describe
from bench.payloads import manifest, sha256_digest, tiny_image
from bench.servers import process_tree, start_dockyard, stop

REPO = "bench/ui"
TARGET_MS = 50.0


def populate(url: str, tags: int, repos: int) -> float:
    started = time.perf_counter()
    config, layer = tiny_image()
    with Client(url) as client:
        for blob in (config, layer):
            ops.ensure_blob(client, REPO, blob)
    body = manifest(config, [layer], {"org.opencontainers.image.description": "the UI bench"})
    digest = sha256_digest(body)

    def tag(client: Client, i: int) -> None:
        ops.put_manifest(client, REPO, f"t{i:05d}", body, digest)

    def repo(client: Client, i: int) -> None:
        name = f"bench/home-{i:06d}"
        for blob in (config, layer):
            ops.mount(client, name, REPO, blob)
        ops.put_manifest(client, name, "latest", body, digest)

    with Client(url) as client:
        ops.put_manifest(client, REPO, "moving", body, digest)  # the tag the timing moves
    for op, count in ((tag, tags), (repo, repos)):
        result = run_concurrent(url, 16, count, 1200.0, op)
        if result.truncated:
            raise SystemExit(f"populating stopped by the clock after {result.ops} of {count}")
    return time.perf_counter() - started, (body, digest)


def time_page(url: str, path: str, must_contain: str, requests: int,
              touch: tuple[bytes, str] | None, procs: list[Any]) -> dict[str, Any]:
    """Times GET `path`; with `touch`, first moves a tag (untimed) each time, so that
    no cache holds the repository's answers: the cost right after a push.

    Also adds up the CPU time the server's processes (`procs`) spend across each
    GET, per role: unlike a latency on a shared machine, it hardly depends on
    what else runs (read in clock ticks, so only the mean over many is exact)."""
    latencies = []
    cpu: dict[str, float] = {}
    with Client(url) as client:
        client.request("GET", path)  # warm: the first answer fills caches
        deadline = time.monotonic() + 60
        for _ in range(requests):
            if touch is not None:
                ops.put_manifest(client, REPO, "moving", *touch)
            before = _cpu(procs)
            started = time.perf_counter()
            resp = client.request("GET", path, headers={"Accept": "text/html"})
            latencies.append(time.perf_counter() - started)
            for (role, pid), seconds in _cpu(procs).items():
                cpu[role] = cpu.get(role, 0.0) + seconds - before.get((role, pid), seconds)
            if must_contain.encode() not in resp.body:
                raise resp.fail(f"the page does not show {must_contain!r}")
            if time.monotonic() > deadline:
                break
    latencies.sort()
    return {"requests": len(latencies),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2),
            "cpu_ms_per_request": {role: round(1000 * v / len(latencies), 2)
                                   for role, v in sorted(cpu.items()) if v > 0}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.web_ui", description=__doc__)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).with_name("results") / "web_ui.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-web-ui-"))
    server = start_dockyard("dockyard", scratch)
    try:
        populate_seconds, image = populate(server.base_url, args.tags, args.repos)
        last = f"t{args.tags - 1:05d}"
        tags = f"{args.tags:,} tags"
        pages = [
            ("home", "/ui/", "bench/home-000000", None),
            ("home, filtered", "/ui/?q=home-0001", "100 repositories match", None),
            (f"repository, {tags}, by name", f"/ui/r/{REPO}", "t00098", None),
            (f"repository, {tags}, by name, uncached", f"/ui/r/{REPO}", "t00098", image),
            (f"repository, {tags}, newest first", f"/ui/r/{REPO}?sort=pushed", "moving",
             None),
            (f"repository, {tags}, newest first, uncached", f"/ui/r/{REPO}?sort=pushed",
             "moving", image),
            (f"repository, {tags}, last page, uncached",
             f"/ui/r/{REPO}?sort=name&page={-(-(args.tags + 1) // 100)}", last, image),
            ("manifest (image)", f"/ui/r/{REPO}/-/manifests/t00042", "Layers", None),
        ]
        results = {}
        for label, path, must, touch in pages:
            # The machine's 1-minute load as each page is timed: the figures mean
            # little without it on a shared machine.
            load = round(os.getloadavg()[0], 2)
            results[label] = {"path": path, **time_page(server.base_url, path, must,
                                                        args.requests, touch,
                                                        process_tree(server.pid)),
                              "loadavg_1m": load}
    finally:
        stop(server)
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(label) for label in results)
    print(f"{'page'.ljust(width)}  p50 ms  p95 ms  load  CPU ms  target p95 < "
          f"{TARGET_MS:.0f} ms")
    for label, r in results.items():
        verdict = "PASS" if r["p95_ms"] < TARGET_MS else "FAIL"
        print(f"{label.ljust(width)}  {r['p50_ms']:6.2f}  {r['p95_ms']:6.2f}  "
              f"{r['loadavg_1m']:4.1f}  {sum(r['cpu_ms_per_request'].values()):6.2f}  "
              f"{verdict}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(), "tags": args.tags, "repos": args.repos,
        "populate_seconds": round(populate_seconds, 1), "target_p95_ms": TARGET_MS,
        "pages": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
