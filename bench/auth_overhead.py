"""What access control costs a pull: GET manifest by tag, 16 clients, with wrk.

Three `dockyard serve` configurations, same machine, same image:
- off:    no access control;
- basic:  htpasswd user, Basic credentials on every request (verified once by
          bcrypt, then by keyed hash from the router's bounded cache);
- bearer: a token from the built-in token endpoint (ES256; verified once,
          then remembered until it expires).

The cost of a request is the CPU time (user + system) that the registry's
whole process tree spent during the wrk run, divided by the requests wrk
completed: on a shared machine that is far steadier than requests/s, which
also moves with everything else the machine runs. Rounds alternate the order
of the configurations; the median of each is reported, with the cost of auth
as (CPU per request with auth / without - 1), and requests/s beside it.
Every response must be a 200 (wrk's non-2xx count must be zero).

    .venv/bin/python bench/auth_overhead.py [--rounds 3] [--duration 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import bcrypt
import psutil

VENV_BIN = Path(sys.executable).parent
ACCEPT = "application/vnd.oci.image.manifest.v1+json"
REPO, TAG = "bench/app", "v1"
USER, PASSWORD = "bench", "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, auth: bool) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict = {"log": {"access": False, "level": "warning"}}
        root.mkdir(parents=True, exist_ok=True)
        if auth:
            htpasswd = root / "htpasswd"
            entry = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10))
            htpasswd.write_bytes(USER.encode() + b":" + entry + b"\n")
            config["auth"] = {"htpasswd": str(htpasswd)}
            config["access"] = [{"repositories": ["**"], "users": [USER],
                                 "actions": ["pull", "push"]}]
        (root / "config.yaml").write_text(json.dumps(config))
        with open(root / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "dockyard"), "serve", "--port", str(self.port), "--data-dir",
                 str(root / "data"), "--config", str(root / "config.yaml")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockyard did not start; see {root}/serve.log")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in [psutil.Process(self.proc.pid),
                     *psutil.Process(self.proc.pid).children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def request(method: str, url: str, body: bytes = b"", headers: dict | None = None) -> tuple:
    req = urllib.request.Request(url, data=body if method in ("POST", "PUT") else None,
                                 method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def push_image(server: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    def blob(data: bytes) -> dict:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        request("POST", f"{server.url}/v2/{REPO}/blobs/uploads/?digest={digest}", data,
                {**headers, "Content-Type": "application/octet-stream"})
        return {"digest": digest, "size": len(data)}

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = {"schemaVersion": 2, "mediaType": ACCEPT,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **blob(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            **blob(os.urandom(4096))}]}
    request("PUT", f"{server.url}/v2/{REPO}/manifests/{TAG}", json.dumps(manifest).encode(),
            {**headers, "Content-Type": ACCEPT})


def wrk(url: str, authorization: str | None, duration: int,
        clients: int) -> tuple[float, int]:
    """(requests/s, requests completed)."""
    argv = ["wrk", "-t", "4", "-c", str(clients), "-d", f"{duration}s", "--latency",
            "-H", f"Accept: {ACCEPT}"]
    if authorization:
        argv += ["-H", f"Authorization: {authorization}"]
    out = subprocess.run([*argv, f"{url}/v2/{REPO}/manifests/{TAG}"], capture_output=True,
                         text=True, check=True).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    if "Non-2xx" in out or (errors and any(int(n) for n in errors.groups())):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    timeouts = re.search(r"timeout (\d+)", out)
    if timeouts:
        # wrk's 2 s timeout; requests still in flight when the clock stops count too.
        scheme = authorization.split()[0] if authorization else "no auth"
        print(f"  note: {timeouts.group(1)} requests over 2 s ({url}, {scheme})",
              file=sys.stderr)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, int(re.search(r"(\d+) requests in", out).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with tempfile.TemporaryDirectory(prefix="dockyard-auth-bench-") as tmp:
        off = Server(Path(tmp) / "off", False)
        try:
            on = Server(Path(tmp) / "on", True)
        except BaseException:
            off.stop()
            raise
        try:
            push_image(off, None)
            push_image(on, basic)
            token_url = (f"{on.url}/auth/token?service=dockyard"
                         f"&scope=repository:{REPO}:pull")
            token = json.loads(request("GET", token_url, headers={"Authorization": basic})[2])
            runs = {"off": (off, None), "basic": (on, basic),
                    "bearer": (on, f"Bearer {token['token']}")}
            samples: dict[str, list[float]] = {name: [] for name in runs}
            cpu_us: dict[str, list[float]] = {name: [] for name in runs}
            order = list(runs)
            for server, auth in runs.values():  # warm-up: caches, connections
                wrk(server.url, auth, 2, args.clients)
            for round_ in range(args.rounds):
                for name in order if round_ % 2 == 0 else reversed(order):
                    server, auth = runs[name]
                    before = server.cpu_seconds()
                    rate, count = wrk(server.url, auth, args.duration, args.clients)
                    cpu_us[name].append((server.cpu_seconds() - before) / count * 1e6)
                    samples[name].append(rate)
        finally:
            off.stop()
            on.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    costs = {name: statistics.median(values) for name, values in cpu_us.items()}
    print(f"GET manifest by tag, {args.clients} clients, {args.rounds} rounds x "
          f"{args.duration} s (wrk), {platform.node()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'config':8} {'CPU us/req':>11} {'cost vs off':>12} {'req/s':>8}  "
          "CPU us/req samples")
    for name in runs:
        print(f"{name:8} {costs[name]:11.0f} {costs[name] / costs['off'] - 1:+12.1%} "
              f"{medians[name]:8.0f}  " + ", ".join(f"{v:.0f}" for v in cpu_us[name]))
    worst = max(costs[n] / costs["off"] - 1 for n in ("basic", "bearer"))
    print(f"target: at most +15% cost with auth on; worst {worst:+.1%}: "
          f"{'PASS' if worst <= 0.15 else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({
            "clients": args.clients, "requests_per_second": samples,
            "cpu_us_per_request": cpu_us, "worst_cost": worst}, indent=2))
    return 0 if worst <= 0.15 else 1

if __name__ == "__main__":
    sys.exit(main())
