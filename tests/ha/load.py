"""One client process of the HA scenarios: pushes and pulls through the routers.

Run as ``python -m tests.ha.load --routers URL,URL --seconds N --seed S --out FILE``.
It behaves like a registry client in front of a load balancer:

- a request whose connection is refused goes to the next router at once
  (a *failover*: nothing was sent);
- a 5xx answer or a connection lost mid-request is sent again, to the next
  router, after ``Retry-After`` (capped at half a second) — a *retry*; a
  chunked upload that fails part-way starts the blob over;
- an operation *fails* only when it has not succeeded within `GIVE_UP` seconds,
  or on an answer no retry can change (a 4xx).

Every push is verified by the digests the registry returns; every pull by
hashing what it got. The report (JSON) holds the counts, the longest time an
operation waited between its first failure and its success (the
unavailability window), and every acknowledged push, for the test to check
afterwards that none was lost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
GIVE_UP = 60.0
MAX_BACKOFF = 0.5
OK = (200, 201, 202, 204)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Failed(Exception):
    """An operation that did not succeed within its retries."""


class Retryable(Exception):
    pass


@dataclass
class Report:
    attempted: int = 0
    retried: int = 0
    failovers: int = 0
    failed: int = 0
    wrong_bytes: int = 0
    longest_window: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)
    acked: list[dict[str, Any]] = field(default_factory=list)


class Client:
    def __init__(self, routers: list[str], rng: random.Random, report: Report) -> None:
        self.routers = [r.rstrip("/") for r in routers]
        self.rng = rng
        self.turn = rng.randrange(len(self.routers))
        self.report = report
        self.http = urllib3.PoolManager(
            retries=False, maxsize=4, timeout=urllib3.Timeout(connect=2.0, read=30.0))
        self._op_retried = False
        self._op_failed_at: float | None = None

    # -- one HTTP request ----------------------------------------------------------

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """Send once; raise Retryable for what a retry may fix, Failed for what it cannot."""
        router = self.routers[self.turn % len(self.routers)]
        try:
            r = self.http.request(method, router + path, body=body, headers=headers or {},
                                  redirect=False)
        except urllib3.exceptions.NewConnectionError as e:
            self.turn += 1
            self.report.failovers += 1
            raise Retryable(f"connect {router}: {e}") from None
        except urllib3.exceptions.HTTPError as e:
            self.turn += 1
            raise Retryable(f"{method} {path} via {router}: {type(e).__name__}") from None
        self.report.statuses[str(r.status)] += 1
        if r.status in OK:
            return r
        if r.status >= 500:
            if r.status == 503 and "Retry-After" not in r.headers:
                self.report.missing_retry_after += 1
            self.turn += 1
            wait = float(r.headers.get("Retry-After", "0.2") or 0.2)
            time.sleep(min(wait, MAX_BACKOFF))
            raise Retryable(f"{method} {path} via {router}: {r.status}")
        raise Failed(f"{method} {path} via {router}: {r.status} {r.data[:300]!r}")

    def step(self, fn: Any, *args: Any) -> Any:
        """Run `fn` until it succeeds, as one part of the current operation."""
        while True:
            try:
                result = fn(*args)
            except Retryable as e:
                self._op_retried = True
                now = time.monotonic()
                if self._op_failed_at is None:
                    self._op_failed_at = now
                elif now - self._op_failed_at > GIVE_UP:
                    raise Failed(f"gave up after {GIVE_UP:.0f}s: {e}") from None
                if not str(e).startswith("connect"):
                    time.sleep(0.02)
                continue
            if self._op_failed_at is not None:
                window = time.monotonic() - self._op_failed_at
                self.report.longest_window = max(self.report.longest_window, window)
                self._op_failed_at = None
            return result

    def operation(self, fn: Any, *args: Any) -> Any:
        self.report.attempted += 1
        self._op_retried = False
        self._op_failed_at = None
        try:
            return fn(*args)
        except Failed as e:
            self.report.failed += 1
            if len(self.report.errors) < 20:
                self.report.errors.append(str(e))
            return None
        finally:
            if self._op_retried:
                self.report.retried += 1

    # -- blobs ---------------------------------------------------------------------

    def _monolithic(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.send("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
                      {"Content-Type": "application/octet-stream"})
        if r.headers.get("Docker-Content-Digest") != digest:
            raise Failed(f"upload answered digest {r.headers.get('Docker-Content-Digest')}")
        return digest

    def _chunked(self, repo: str, data: bytes, chunks: int) -> str:
        """POST, a PATCH per chunk, PUT: each through whichever router and storage is
        next. Any failure starts the blob over (a PATCH may or may not have landed)."""
        digest = sha256(data)
        r = self.send("POST", f"/v2/{repo}/blobs/uploads/")
        location = _path(r.headers["Location"])
        size = -(-len(data) // chunks)
        for start in range(0, len(data), size):
            piece = data[start:start + size]
            r = self.send("PATCH", location, piece, {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(piece) - 1}"})
            location = _path(r.headers["Location"])
        sep = "&" if "?" in location else "?"
        try:
            r = self.send("PUT", f"{location}{sep}digest={digest}", b"",
                          {"Content-Type": "application/octet-stream"})
        except Failed as e:
            # A storage killed after it committed the blob but before the answer got
            # out: the router's retry finds the session gone. A client then pushes
            # the blob again, as docker does, and nothing acknowledged was lost.
            if "BLOB_UPLOAD_UNKNOWN" in str(e):
                raise Retryable(str(e)) from None
            raise
        if r.headers.get("Docker-Content-Digest") != digest:
            raise Failed("chunked upload answered another digest")
        return digest

    def push_blob(self, repo: str, data: bytes) -> str:
        if self.rng.random() < 0.5:
            return self.step(self._monolithic, repo, data)
        return self.step(self._chunked, repo, data, self.rng.randint(2, 4))

    # -- operations ----------------------------------------------------------------

    def push(self, repo: str, tag: str) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "nonce": os.urandom(8).hex()}).encode()
        layer = os.urandom(self.rng.randint(2048, 32768))
        config_digest = self.push_blob(repo, config)
        layer_digest = self.push_blob(repo, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }).encode()
        r = self.step(self.send, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                      {"Content-Type": OCI_MANIFEST})
        digest = sha256(manifest)
        if r.headers.get("Docker-Content-Digest") != digest:
            raise Failed("manifest PUT answered another digest")
        self.report.acked.append({"repo": repo, "tag": tag, "digest": digest, "at": time.time(),
                                  "blobs": [[config_digest, len(config)],
                                            [layer_digest, len(layer)]]})

    def pull(self, item: dict[str, Any], by_digest: bool) -> None:
        """Fetch a pushed image and check every byte against its digest."""
        reference = item["digest"] if by_digest else item["tag"]
        r = self.step(self.send, "GET", f"/v2/{item['repo']}/manifests/{reference}", None,
                      {"Accept": OCI_MANIFEST})
        if sha256(r.data) != item["digest"]:
            self.report.wrong_bytes += 1
            raise Failed(f"{item['repo']}:{reference} served a manifest of another digest")
        for digest, size in item["blobs"]:
            r = self.step(self.send, "GET", f"/v2/{item['repo']}/blobs/{digest}")
            if len(r.data) != size or sha256(r.data) != digest:
                self.report.wrong_bytes += 1
                raise Failed(f"blob {digest} served other bytes")


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def run(routers: list[str], seconds: float, seed: int, prefix: str,
        stop_file: str | None = None) -> Report:
    rng = random.Random(seed)
    report = Report()
    client = Client(routers, rng, report)
    repos = [f"{prefix}/c{seed}-{i}" for i in range(3)]
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file)):
        if not report.acked or rng.random() < 0.5:
            client.operation(client.push, rng.choice(repos), f"t{n}")
            n += 1
        else:
            client.operation(client.pull, rng.choice(report.acked), rng.random() < 0.5)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routers", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix", default="ha")
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", help="stop early once this file exists")
    args = parser.parse_args(argv)
    report = run(args.routers.split(","), args.seconds, args.seed, args.prefix,
                 args.stop_file)
    with open(args.out, "w") as f:
        json.dump({**asdict(report), "statuses": dict(report.statuses)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
