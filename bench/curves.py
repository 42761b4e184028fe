"""Concurrency curves of small requests, driven by wrk (bench/wrk.py).

For each of GET manifest by tag, HEAD by tag, blob HEAD and tags list: the
throughput, p99 and errors at 1, 16, 64 and 256 clients, from wrk (GET) or
from two Python processes of `bench/headload.py` (HEAD, which wrk cannot
time: it waits for the body a HEAD answer announces). They run after the
Python workloads of the same round, whose answers for the same URLs were
checked (status, digest, headers); wrk counts non-2xx answers and socket
errors, and every one is reported.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from bench import headload, wrk
from bench.report import Row, Stats
from bench.settings import Settings
from bench.workloads import BASE_REPO, Metric, Sample, Side

MANIFEST_ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

# name -> (title, method, minimum ratio at 16+ clients)
CURVES: dict[str, tuple[str, str, float]] = {
    "get_tag": ("manifest GET by tag", "GET", 1.5),
    "head_tag": ("manifest HEAD by tag", "HEAD", 1.5),
    "blob_head": ("blob HEAD", "HEAD", 1.5),
    "tags": ("tags list, {tags} tags", "GET", 1.5),
}
# The flat-curve target: throughput at the most clients over that at 16.
FLAT_TARGET = 0.9


def _points(name: str, settings: Settings) -> tuple[int, ...]:
    return settings.curve_clients if name == "get_tag" else settings.curve_clients_other


def metrics(settings: Settings) -> list[Metric]:
    out = []
    for name, (title, _, target) in CURVES.items():
        for clients in _points(name, settings):
            out.append(Metric(f"curve_{name}_c{clients}", f"wrk: {title}, {clients} clients",
                              "req/s", target if clients >= 16 else None))
    return out


def _paths(name: str, side: Side) -> tuple[list[str], dict[str, str]]:
    repo, refs = side.tags_repo, side.refs[:200]
    if name in ("get_tag", "head_tag"):
        return [f"/v2/{repo}/manifests/{r.tag}" for r in refs], MANIFEST_ACCEPT
    if name == "blob_head":
        return [f"/v2/{BASE_REPO}/blobs/{b.digest}" for b in (side.layer, side.config)], {}
    return [f"/v2/{repo}/tags/list"], {}


def curves(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    if not wrk.available():
        side.notes.add("wrk is not installed (apt-get install wrk): no concurrency curves")
        return {}
    out: dict[str, Sample] = {}
    for name, (_, method, _) in CURVES.items():
        paths, headers = _paths(name, side)
        for clients in _points(name, settings):
            if method == "HEAD":  # wrk waits for a HEAD answer's body: never completes
                parts = urlsplit(side.url)
                result = headload.run(parts.hostname or "127.0.0.1", parts.port or 80, paths,
                                      clients, settings.curve_seconds,
                                      accept=headers.get("Accept", "*/*"))
            else:
                result = wrk.run(side.url, paths, clients, settings.curve_seconds,
                                 method=method, headers=headers)
            out[f"curve_{name}_c{clients}"] = Sample(result.rate, result.to_dict())
            print(f"    {side.server.label} {name} c={clients}: {result.rate:,.0f} req/s, "
                  f"p99 {result.p99_ms:.1f} ms, non-2xx {result.non2xx}, socket errors "
                  f"{result.socket_errors}, timeouts {result.timeouts}, wrk CPU "
                  f"{result.generator_cpu:.0%} of the machine", file=sys.stderr, flush=True)
    return out




def check_rows(samples: dict[str, dict[str, list[Sample]]], settings: Settings) -> list[Row]:
    """Per curve: is it flat (most clients vs 16), is its p99 at the most clients at or
    below the reference's; and, over all curves, any non-2xx, socket error or timeout."""
    rows: list[Row] = []
    errors = {"dockyard": 0.0, "reference": 0.0}
    for name, (title, _, _) in CURVES.items():
        title = title.format(tags=settings.manifests)
        points = _points(name, settings)
        for clients in points:
            for label, values in samples.get(f"curve_{name}_c{clients}", {}).items():
                errors[label] += sum(float(s.detail["non2xx"]) + float(s.detail["socket_errors"])
                                     + float(s.detail["timeouts"]) for s in values)
        top = max(points)
        if 16 not in points or top == 16:
            continue
        flat: dict[str, Stats | None] = {}
        p99: dict[str, Stats | None] = {}
        for label in ("dockyard", "reference"):
            at16 = samples.get(f"curve_{name}_c16", {}).get(label, [])
            attop = samples.get(f"curve_{name}_c{top}", {}).get(label, [])
            flat[label] = Stats.of([b.value / a.value for a, b in zip(at16, attop, strict=False)
                                    if a.value])
            p99[label] = Stats.of([float(s.detail["p99_ms"]) for s in attop])
        d = flat["dockyard"]
        rows.append(Row(f"curve_{name}_flat", f"wrk: {title}, {top}/16 clients throughput",
                        "share", d, flat["reference"], None, f">= {FLAT_TARGET:g}", None,
                        None if d is None else d.median >= FLAT_TARGET))
        dp, rp = p99["dockyard"], p99["reference"]
        ratio = rp.median / dp.median if dp and rp and dp.median else None
        rows.append(Row(f"curve_{name}_p99_c{top}", f"wrk: {title}, p99 at {top} clients "
                        "(ratio: reference/dockyard)", "ms", dp, rp, ratio, "<= reference",
                        1.0, None if ratio is None else ratio >= 1.0))
    rows.append(Row("curve_errors", "wrk: non-2xx + socket errors + timeouts, all curves",
                    "count", Stats.of([errors["dockyard"]]), Stats.of([errors["reference"]]),
                    None, "0", None, errors["dockyard"] == 0))
    return rows


__all__ = ["CURVES", "FLAT_TARGET", "check_rows", "curves", "metrics"]
