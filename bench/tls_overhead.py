"""What HTTPS and the internal signatures cost: wrk against `dockyard serve`, side by side.

    .venv/bin/python -m bench.tls_overhead                       # HTTP vs HTTPS
    .venv/bin/python -m bench.tls_overhead --baseline /work/main # + a build without signatures

Each mode is a fresh `dockyard serve` on loopback with one pushed image:

- ``http``: plain HTTP on the public port (the router signs its calls to storage/index);
- ``https``: the same with `--tls-cert/--tls-key` (haproxy terminates TLS, services/tls.py),
  each workload run right after against the router's own port behind haproxy
  (``https: router``): the same processes with and without TLS in front, the fairest
  comparison on a busy machine;
- ``baseline`` (with --baseline DIR): plain HTTP, served from another checkout, e.g.
  one from before the internal signatures, to see what signing costs end to end.

Workloads, each run with `wrk -t2 -cN -dD --latency`, modes interleaved per
repetition so that drift on a shared machine hits every mode alike:

- ``version``: GET /v2/, answered by the router itself (the front end alone);
- ``version-close``: the same with ``Connection: close`` (a TLS handshake per request);
- ``manifest``: GET a manifest by tag (the registry's hot path);
- ``blob-1MiB``: GET a 1 MiB layer (bytes through the terminator).

Besides throughput, each run records the CPU time the whole `serve` tree
(haproxy, router, storage, index, redis) spent per request: on a shared
machine throughput follows the neighbours' load, CPU per request much less.

It also times signing and verifying one request in-process (CPU time).
Prints Markdown tables of medians; `--json FILE` keeps every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Serve:
    """One `dockyard serve` from `root` (a checkout), in its own temporary directory."""

    def __init__(self, root: Path, workdir: Path, tls: tuple[Path, Path] | None) -> None:
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "services.cli", "serve", "--port", str(self.port),
                "--data-dir", str(workdir / "data")]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        env = {**os.environ, "PYTHONPATH": str(root), "DOCKYARD_LOG_ACCESS": "false",
               "DOCKYARD_LOG_LEVEL": "warning"}
        self.log = open(workdir / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=root, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._ctx = ssl.create_default_context()
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"dockyard did not start; see {workdir / 'serve.log'}")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ctx) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, body = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}",
                                       data, {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    def seed(self) -> dict[str, str]:
        repo = "bench/tls"
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        layer = os.urandom(1 << 20)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.push_blob(repo, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.push_blob(repo, layer), "size": len(layer)}],
        }).encode()
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/v1", manifest,
                                       {"Content-Type": MANIFEST_TYPE})
        assert status == 201, (status, body)
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        return {"manifest": f"/v2/{repo}/manifests/v1",
                "blob": f"/v2/{repo}/blobs/{layer_digest}"}

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU so far of `serve` and every process under it, and of
        the haproxy processes among them."""
        total = terminator = 0.0
        root = psutil.Process(self.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                name = p.name()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
            if name == "haproxy":
                terminator += t.user + t.system
        return total, terminator

    def router_url(self) -> str:
        """The router's own plain-HTTP address (behind haproxy when TLS is on)."""
        for p in psutil.Process(self.proc.pid).children():
            cmd = p.cmdline()
            if "router" in cmd:
                return "http://" + cmd[cmd.index("--listen") + 1]
        raise LookupError("no router child")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_COUNT = re.compile(r"(\d+) requests in")
_TRANSFER = re.compile(r"Transfer/sec:\s+([\d.]+)([KMG]?B)")
_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_BYTES = {"B": 1 / 2**20, "KB": 1 / 2**10, "MB": 1.0, "GB": 2**10}


def wrk(url: str, connections: int, duration: int, headers: list[str]) -> dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    rps = _RPS.search(out)
    transfer = _TRANSFER.search(out)
    pct = {p: float(v) * _UNIT[u] for p, v, u in _PCT.findall(out)}
    if rps is None or transfer is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    count = _COUNT.search(out)
    return {"rps": float(rps.group(1)), "requests": float(count.group(1)) if count else 0.0,
            "mib_s": float(transfer.group(1)) * _BYTES[transfer.group(2)],
            "p50_ms": pct.get("50", 0.0), "p99_ms": pct.get("99", 0.0),
            "non_2xx": float(errors.group(1)) if errors else 0.0}


DIRECT = "https: router"


def measure(server: Serve, url: str, headers: list[str], args: argparse.Namespace,
            ) -> dict[str, float]:
    before, before_terminator = server.cpu_seconds()
    result = wrk(url, args.connections, args.duration, headers)
    after, after_terminator = server.cpu_seconds()
    n = max(1.0, result["requests"])
    result["cpu_us_per_req"] = (after - before) * 1e6 / n
    result["haproxy_us_per_req"] = (after_terminator - before_terminator) * 1e6 / n
    return result


def workloads(paths: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    return [
        ("version", "/v2/", []),
        ("version-close", "/v2/", ["Connection: close"]),
        ("manifest", paths["manifest"], [f"Accept: {MANIFEST_TYPE}"]),
        ("blob-1MiB", paths["blob"], []),
    ]


def micro() -> dict[str, float]:
    """Microseconds to sign one request, and to verify it, in this process."""
    sys.path.insert(0, str(REPO_ROOT))
    import falcon.testing

    from shared.service_auth import ServiceKey

    key = ServiceKey("x" * 64, max_skew=3600)
    headers = [("Accept", MANIFEST_TYPE), ("X-Dockyard-Cache-Wanted", "1")]
    target = "/v2/library/alpine/manifests/3.20"
    n = 20000
    # CPU time, not wall time: on a shared machine the wall clock counts other processes.
    sign = min(timeit.repeat(lambda: key.sign("GET", target, headers, None),
                             number=n, repeat=5, timer=time.process_time)) / n * 1e6
    environs = []
    for _ in range(n * 5):
        h = dict(headers)
        h["X-Dockyard-Signature"] = key.sign("GET", target, headers, None)
        environs.append(falcon.testing.create_environ(path=target, headers=h))
    it = iter(environs)
    verify = min(timeit.repeat(lambda: key.verify(next(it)), number=n, repeat=5,
                               timer=time.process_time)) / n * 1e6
    return {"sign_us": sign, "verify_us": verify}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout to run as `baseline`")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--no-micro", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    modes: list[tuple[str, Path, bool]] = [("http", REPO_ROOT, False), ("https", REPO_ROOT, True)]
    if args.baseline:
        modes.insert(0, ("baseline", args.baseline.resolve(), False))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dockyard-tls-bench-") as tmp:
        tls = make_cert(Path(tmp))
        for rep in range(args.repeat):
            for mode, root, with_tls in modes:
                workdir = Path(tmp) / f"{mode}-{rep}"
                workdir.mkdir()
                server = Serve(root, workdir, tls if with_tls else None)
                try:
                    paths = server.seed()
                    # With TLS, each workload also goes to the router directly, right
                    # before: the same processes with and without haproxy in front.
                    targets = [(mode, server.url)]
                    if with_tls:
                        targets.insert(0, (DIRECT, server.router_url()))
                    for name, path, headers in workloads(paths):
                        for label, base in targets:
                            runs.append({"mode": label, "workload": name, "repeat": rep,
                                         **measure(server, base + path, headers, args)})
                            r = runs[-1]
                            print(f"{label:14} {name:14} rep {rep}: {r['rps']:8.0f} req/s "
                                  f"{r['mib_s']:8.1f} MiB/s p50 {r['p50_ms']:.2f} ms "
                                  f"p99 {r['p99_ms']:.2f} ms cpu {r['cpu_us_per_req']:.0f} "
                                  f"µs/req (haproxy {r['haproxy_us_per_req']:.0f})",
                                  file=sys.stderr)
                finally:
                    server.stop()

    mode_names = [m for m, _, _ in modes]
    mode_names.insert(mode_names.index("https"), DIRECT)
    names = ("version", "version-close", "manifest", "blob-1MiB")
    print(f"\nwrk -t2 -c{args.connections} -d{args.duration}s, median of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for title, pick in (
        ("throughput: req/s (MiB/s for blob-1MiB)",
         lambda name: "mib_s" if name.startswith("blob") else "rps"),
        ("server CPU per request, µs (all of serve's processes)",
         lambda name: "cpu_us_per_req"),
        ("of which haproxy, µs per request", lambda name: "haproxy_us_per_req"),
    ):
        print(f"\n{title}\n")
        print("| workload | " + " | ".join(mode_names) + " | https vs router |")
        print("|---|" + "---|" * (len(mode_names) + 1))
        for name in names:
            field = pick(name)
            med = {m: statistics.median(r[field] for r in runs
                                        if r["mode"] == m and r["workload"] == name)
                   for m in mode_names}
            ratio = med["https"] / med[DIRECT] - 1 if med[DIRECT] else 0.0
            cells = " | ".join(f"{med[m]:.1f}" if field == "mib_s" else f"{med[m]:.0f}"
                               for m in mode_names)
            print(f"| {name} | {cells} | {ratio:+.0%} |")
    result: dict[str, Any] = {"runs": runs}
    if not args.no_micro:
        result["micro"] = micro()
        print(f"\nsigning one request: {result['micro']['sign_us']:.1f} µs; "
              f"verifying it: {result['micro']['verify_us']:.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
