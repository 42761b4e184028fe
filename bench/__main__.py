"""Side-by-side benchmark of dockyard against the reference registry.

Usage: python -m bench [--quick] [--rounds N] [--candidate reference] [--keep-going]
       python -m bench --s3 [--quick] [--rounds N]   (bench/s3.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

from bench import curves, machine, report, search, servers, wrk
from bench.client import ProtocolError
from bench.rss import RssSampler
from bench.settings import FULL, QUICK, MiB, Settings
from bench.workloads import METRICS, WORKLOADS, Sample, Side, setup_side, titled

RESULTS = Path(__file__).resolve().parent / "results"
EXIT_PROTOCOL = 2
EXIT_TARGETS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 round, under a minute")
    p.add_argument("--rounds", type=int, help="rounds (default: 3, quick: 1)")
    p.add_argument(
        "--candidate",
        choices=["dockyard", "reference"],
        default="dockyard",
        help="what runs in the dockyard column; 'reference' runs a second reference "
        "registry there to validate the harness (ratios should be ~1.0)",
    )
    p.add_argument("--search-repos", type=int, help="repositories for the search workload")
    p.add_argument("--skip-search", action="store_true", help="no search population/measurement")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="after a protocol error, go on with the other workloads (still exits 2)",
    )
    p.add_argument("--output-dir", type=Path, default=RESULTS, help="for latest.json/.png")
    p.add_argument("--keep", action="store_true", help="keep server storage and logs")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_TARGETS} on a missed target")
    p.add_argument("--s3", action="store_true",
                   help="the S3 scenario instead (bench/s3.py; with --quick, --rounds)")
    return p.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into an exception so `finally` stops the servers.
    raise SystemExit(128 + signum)


class Run:
    """One benchmark run: servers, sampled memory, collected samples and errors."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.scratch = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
        self.servers: dict[str, servers.Server] = {}
        self.sides: dict[str, Side] = {}
        self.samples: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
        self.search_samples: list[Sample] = []
        self.search_wrk: dict[str, list[Sample]] = defaultdict(list)
        self.populate: dict[str, Any] = {}
        self.errors: list[ProtocolError] = []
        self.sampler: RssSampler | None = None
        self.started = time.monotonic()
        self.machine = machine.describe()
        if float(str(self.machine["loadavg_1m"])) > 0.5:
            print(
                f"warning: the machine is busy (1-minute load {self.machine['loadavg_1m']}); "
                "both sides share the noise, but ratios will be less stable",
                file=sys.stderr,
            )

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {msg}", flush=True)

    def start_servers(self) -> None:
        if self.args.candidate == "dockyard":
            self.servers["dockyard"] = servers.start_dockyard("dockyard", self.scratch)
        else:
            self.servers["dockyard"] = servers.start_reference("dockyard", self.scratch)
        self.servers["reference"] = servers.start_reference("reference", self.scratch)
        for label, s in self.servers.items():
            self.log(f"{label}: {s.kind} {s.version} at {s.base_url} (pid {s.pid})")
        self.sampler = RssSampler({label: s.pid for label, s in self.servers.items()})
        self.sampler.start()

    def attempt(self, label: str, what: str, fn: Any, *a: Any, **kw: Any) -> Any:
        """Call fn. A protocol error is tagged with its side, printed with the
        server's log tail, and re-raised, or swallowed (returning None) with
        --keep-going so the remaining workloads still run."""
        try:
            return fn(*a, **kw)
        except ProtocolError as exc:
            server = self.servers[label]
            exc.message = f"[{label}: {server.kind}] {what}: {exc.message}"
            self.errors.append(exc)
            print("\n" + exc.describe(), file=sys.stderr)
            print(f"--- last lines of {server.log_path} ---", file=sys.stderr)
            print(server.log_tail(15) + "\n", file=sys.stderr)
            if not self.args.keep_going:
                raise
            return None

    def compare(self) -> None:
        for label, server in self.servers.items():
            side = self.attempt(label, "setup", setup_side, server, self.settings)
            if side is None:
                raise self.errors[-1]  # nothing can run without the base blobs
            self.sides[label] = side
        labels = list(self.servers)
        for round_no in range(self.settings.rounds):
            # Alternate who goes first so warm caches and background work
            # (page-cache writeback of the last big push) do not favour one side.
            order = labels if round_no % 2 == 0 else labels[::-1]
            for name, workload in [*WORKLOADS, ("wrk curves", curves.curves)]:
                parts = []
                for label in order:
                    side = self.sides[label]
                    out = self.attempt(label, name, workload, side, self.settings, round_no)
                    if out is None:
                        parts.append(f"{label} PROTOCOL ERROR")
                        continue
                    for key, sample in out.items():
                        self.samples[key][label].append(sample)
                    values = ", ".join(f"{k}={v.value:,.1f}" for k, v in out.items())
                    parts.append(f"{label} {values}")
                rounds = self.settings.rounds
                self.log(f"round {round_no + 1}/{rounds} {name}: " + " | ".join(parts))

    def run_search(self) -> None:
        side = self.sides["dockyard"]
        count = self.args.search_repos or self.settings.search_repos
        assert self.sampler is not None
        # Only dockyard does this work, so it must not count in the side-by-side RSS.
        self.sampler.set_phase("search")
        self.log(f"search: creating {count:,} repositories on {side.server.label} via HTTP")
        pop = self.attempt(
            "dockyard",
            "populate_search",
            search.populate_search,
            side,
            count,
            clients=self.settings.populate_clients,
            time_limit=self.settings.populate_time_limit,
        )
        if pop is None or pop.created == 0:
            return
        self.populate = {
            **dataclasses.asdict(pop),
            "repos_per_second": round(pop.repos_per_second, 1),
        }
        limit_hit = " - TIME LIMIT HIT" if pop.truncated else ""
        self.log(
            f"search: {pop.created:,} repositories in {pop.seconds:.1f}s "
            f"({pop.repos_per_second:,.0f}/s){limit_hit}"
        )
        if side.server.kind != "dockyard":
            self.log("search: the reference has no search API; skipping the latency measurement")
            return
        n = self.settings.search_page
        lag = self.attempt("dockyard", "search index", search.wait_indexed, side, pop.created, n)
        if lag is None:
            return
        self.populate["index_lag_seconds"] = round(lag, 3)
        for round_no in range(self.settings.rounds):
            sample = self.attempt(
                "dockyard", "search", search.measure_search, side, self.settings, pop.created,
                round_no,
            )
            if sample is None:
                return
            self.search_samples.append(sample)
            self.log(
                f"round {round_no + 1}/{self.settings.rounds} search: p99 {sample.value:.2f} ms, "
                f"p50 {sample.detail['p50_ms']} ms, {sample.detail['rate']} req/s"
            )
            if not wrk.available():
                continue
            out = self.attempt("dockyard", "search (wrk)", search.measure_search_wrk, side,
                               self.settings, pop.created, round_no)
            if out is None:
                return
            for key, sample in out.items():
                self.search_wrk[key].append(sample)
            paced, closed = out["search_paced_p99"].detail, out["search_closed_rate"].detail
            self.log(
                f"round {round_no + 1}/{self.settings.rounds} search (wrk, 64 connections): "
                f"paced {paced['rate']:,.0f} q/s p99 {paced['p99_ms']:.2f} ms; closed loop "
                f"{closed['rate']:,.0f} q/s p99 {closed['p99_ms']:.2f} ms; wrk CPU "
                f"{max(paced['generator_cpu'], closed['generator_cpu']):.0%} of the machine"
            )

    def stop(self) -> None:
        """Stop every server (idempotent); storage stays until ``cleanup``."""
        if self.sampler is not None:
            self.sampler.sample_once()
            self.sampler.stop()
        t0 = time.monotonic()
        for label, server in list(self.servers.items()):
            try:
                servers.stop(server)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {label} (pid {server.pid}): {exc}", file=sys.stderr)
        self.log(f"servers stopped in {time.monotonic() - t0:.1f}s")

    def cleanup(self) -> None:
        if self.args.keep:
            print(f"server storage and logs kept in {self.scratch}")
        else:
            # Can take a while after 100,000 repositories: done after the report.
            t0 = time.monotonic()
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.log(f"removed {self.scratch} in {time.monotonic() - t0:.1f}s")

    def rows(self) -> list[report.Row]:
        rss_mib = {"dockyard": 0.0, "reference": 0.0}
        if self.sampler is not None:
            for label in rss_mib:
                rss_mib[label] = self.sampler.peak("compare", label).total_bytes / MiB
        metrics = titled([*METRICS, *curves.metrics(self.settings)], self.settings)
        rows = report.build_rows(metrics, self.samples, self.search_samples, rss_mib)
        return [*rows[:-1], *curves.check_rows(self.samples, self.settings),
                *report.search_wrk_rows(self.search_wrk, self.settings), rows[-1]]

    def document(self, rows: list[report.Row]) -> dict[str, Any]:
        rss: dict[str, Any] = {}
        if self.sampler is not None:
            for phase, peaks in self.sampler.peaks.items():
                rss[phase] = {
                    label: {
                        "peak_mib": round(p.total_bytes / MiB, 1),
                        "at_peak_mib": {k: round(v / MiB, 1) for k, v in p.breakdown.items()},
                    }
                    for label, p in peaks.items()
                }
        notes = {}
        for label, side in self.sides.items():
            notes[label] = sorted(side.notes)
            if side.mount_fallbacks:
                notes[label].append(f"{side.mount_fallbacks} cross-repo mounts declined (202)")
        for key, per in self.samples.items():
            for label, values in per.items():
                for round_no, s in enumerate(values, 1):
                    if s.detail.get("truncated"):
                        notes.setdefault(label, []).append(
                            f"{key} round {round_no}: time limit hit after {s.detail['ops']} ops"
                        )
        samples = {
            key: {label: [dataclasses.asdict(s) for s in v] for label, v in per.items()}
            for key, per in self.samples.items()
        }
        servers_doc = {
            label: {"kind": s.kind, "version": s.version, "url": s.base_url, **s.extra}
            for label, s in self.servers.items()
        }
        return {
            "mode": "quick" if self.args.quick else "full",
            "candidate": self.args.candidate,
            "machine": {**self.machine, "loadavg_1m_end": round(os.getloadavg()[0], 2)},
            "settings": dataclasses.asdict(self.settings),
            "servers": servers_doc,
            "passed": not self.errors and all(r.passed is not False for r in rows),
            "protocol_errors": [e.to_json() for e in self.errors],
            "rows": report.rows_json(rows),
            "samples": samples,
            "search": {
                "populate": self.populate,
                "samples": [dataclasses.asdict(s) for s in self.search_samples],
                "wrk": {k: [dataclasses.asdict(s) for s in v] for k, v in self.search_wrk.items()},
            },
            "rss": rss,
            "notes": notes,
            "duration_seconds": round(time.monotonic() - self.started, 1),
        }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--s3" in argv:
        from bench import s3

        return s3.main([a for a in argv if a != "--s3"])
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    # Explicit, because a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    run = Run(args, settings)
    try:
        run.start_servers()
        run.compare()
        if not args.skip_search:
            run.run_search()
    except ProtocolError:
        pass  # already printed and recorded by Run.attempt; report what we have
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        run.stop()
        run.cleanup()
        return 130
    except SystemExit as exc:  # SIGTERM/SIGHUP, see _terminate
        print("terminated; stopping servers", file=sys.stderr)
        run.stop()
        run.cleanup()
        return int(exc.code or 1)
    except BaseException:
        traceback.print_exc()
        run.stop()
        run.cleanup()
        return 1
    run.stop()
    try:
        return report_results(run, args, settings)
    finally:
        run.cleanup()


def report_results(run: Run, args: argparse.Namespace, settings: Settings) -> int:
    """Print the table, write latest.json/.png; returns the exit code."""
    rows = run.rows()
    label = "dockyard" if args.candidate == "dockyard" else "reference#2"
    mach = run.machine
    subtitle = f"{mach['cpu_model']}, {mach['cores']} cores, {mach['ram_gib']} GiB, {mach['date']}"
    doc = run.document(rows)
    out = args.output_dir
    report.write_json(out / "latest.json", doc)
    mode = "quick" if args.quick else "full"
    print(f"\n{label} vs reference ({mode}, {settings.rounds} round(s); {subtitle})")
    print(report.format_table(rows, label))
    for side, notes in doc["notes"].items():
        for note in notes:
            print(f"note: {side}: {note}")
    if run.populate:
        pop = run.populate
        lag = pop.get("index_lag_seconds")
        print(
            f"search population: {pop['created']:,} repositories in {pop['seconds']:.1f}s "
            f"({pop['repos_per_second']:,}/s)" + (f"; searchable {lag}s later" if lag else "")
        )
    report.draw_chart(rows, out / "latest.png", subtitle, label)
    run.log("chart drawn")
    print(f"wrote {out / 'latest.json'} and {out / 'latest.png'}")
    if run.errors:
        for e in run.errors:
            print(f"FAILED: protocol error: {e.message}", file=sys.stderr)
        return EXIT_PROTOCOL
    if args.strict and not doc["passed"]:
        return EXIT_TARGETS
    return 0


if __name__ == "__main__":
    sys.exit(main())
