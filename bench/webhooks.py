"""Push latency with and without webhooks, and what a stalled endpoint costs.

    python -m bench.webhooks [--pushes 300] [--rounds 3]

Runs `dockyard serve` on loopback, in turns: with no endpoint, then with two, a
healthy receiver and one that never answers (each POST waits for its 5 s
timeout). Each run pushes the same number of distinct manifests one after
another and reports the PUT latency; the second also reports how long after
each push's 201 the healthy receiver had its event. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3
import yaml

from bench.machine import describe
from services.supervisor import free_port

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class _Receiver:
    def __init__(self, stall: float) -> None:
        self.arrivals: dict[str, float] = {}  # digest -> arrival time
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                for e in json.loads(body)["events"]:
                    receiver.arrivals.setdefault(e["target"].get("digest", ""), now)
                time.sleep(stall)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.5) * 1000, 2), "p90_ms": round(pick(0.9) * 1000, 2),
            "p99_ms": round(pick(0.99) * 1000, 2),
            "mean_ms": round(statistics.mean(values) * 1000, 2)}


def _run(work: Path, endpoints: list[dict[str, Any]], pushes: int) -> tuple[list[float],
                                                                           list[tuple[str, float]]]:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "dockyard.yml"
    config.write_text(yaml.safe_dump({"log": {"access": False},
                                      "notifications": {"endpoints": endpoints}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--config",
                             str(config), "--port", str(port), "--data-dir", str(work / "data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    http = urllib3.PoolManager(retries=False, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http.request("GET", base + "/readyz").status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dockyard serve did not start")
            time.sleep(0.1)
        repo = "bench/webhooks"
        descriptors = []
        for data in (b'{"architecture":"amd64","os":"linux"}', os.urandom(256)):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = http.request("POST", f"{base}/v2/{repo}/blobs/uploads/?digest={digest}",
                             body=data)
            assert r.status == 201, r.status
            descriptors.append({"mediaType": "application/octet-stream", "digest": digest,
                                "size": len(data)})
        latencies, acked = [], []
        for n in range(pushes):
            body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                               "config": descriptors[0], "layers": descriptors[1:],
                               "annotations": {"n": str(n)}}).encode()
            started = time.perf_counter()
            r = http.request("PUT", f"{base}/v2/{repo}/manifests/t{n}", body=body,
                             headers={"Content-Type": MANIFEST})
            latencies.append(time.perf_counter() - started)
            assert r.status == 201, r.status
            acked.append((r.headers["Docker-Content-Digest"], time.time()))
        return latencies, acked
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pushes", type=int, default=300, help="pushes per run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each, alternating")
    args = p.parse_args(argv)
    healthy, stalled = _Receiver(0.0), _Receiver(3600.0)
    base_lat: list[float] = []
    hook_lat: list[float] = []
    acked: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Alternating, so that other load on the machine falls on both sides alike.
        for r in range(args.rounds):
            base_lat += _run(Path(tmp) / f"without-{r}", [], args.pushes)[0]
            lat, ack = _run(Path(tmp) / f"with-{r}", [
                {"name": "healthy", "url": healthy.url, "timeout": 5},
                {"name": "stalled", "url": stalled.url, "timeout": 5},
            ], args.pushes)
            hook_lat += lat
            acked += ack
    delays = [healthy.arrivals[d] - t for d, t in acked if d in healthy.arrivals]
    print(json.dumps({
        "machine": describe(),
        "command": f"python -m bench.webhooks --pushes {args.pushes} --rounds {args.rounds}",
        "push_without_webhooks": _percentiles(base_lat),
        "push_with_healthy_and_stalled_endpoint": _percentiles(hook_lat),
        "healthy_endpoint_after_201": {**_percentiles([max(0.0, d) for d in delays]),
                                       "delivered": len(delays), "pushed": len(acked)},
        # Events the stalled endpoint was sent, none of them ever answered.
        "stalled_endpoint_events_sent": len(stalled.arrivals),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
