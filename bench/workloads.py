"""The side-by-side workloads. Each runs against one registry and returns samples.

Client-side work that is not the registry's (generating random content,
hashing it, building manifests) happens before the clock starts or after it
stops, so the numbers measure the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import ops
from bench.client import Client, ProtocolError
from bench.loadgen import LoadResult, run_concurrent
from bench.payloads import Blob, manifest, random_blob, sha256_digest, tiny_image
from bench.servers import Server
from bench.settings import MiB, Settings

BASE_REPO = "bench/base"
BIG_REPO = "bench/big"


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    # Minimum dockyard/reference ratio (both as throughput, higher is better);
    # None means reported for information only.
    target: float | None


# Titles are templates filled in by ``titled`` with this run's sizes.
METRICS: list[Metric] = [
    Metric("push_monolithic", "blob push {blob}, monolithic", "MiB/s", 1.5),
    Metric("push_chunked", "blob push {blob}, {chunks} chunks", "MiB/s", 1.5),
    Metric("push_streamed", "blob push {blob}, docker-style", "MiB/s", 1.5),
    Metric("pull", "blob pull {blob}", "MiB/s", 1.0),
    Metric("small_push", "small blob push {small}, {small_clients} clients", "blobs/s", 1.0),
    Metric("manifest_put", "manifest PUT, {manifest_clients} clients", "manifests/s", 1.0),
    Metric("manifest_get_c1", "manifest GET by tag, 1 client", "req/s", None),
    Metric("manifest_get_c16", "manifest GET by tag, 16 clients", "req/s", 1.0),
    Metric("manifest_get_c64", "manifest GET by tag, 64 clients", "req/s", None),
    Metric("manifest_head", "manifest HEAD, {head_clients} clients", "req/s", None),
    Metric("tags_list", "tags list, {tags} tags", "lists/s", 1.0),
    Metric("tags_list_paged", "tags list, {tags} tags, n={page} pages", "lists/s", 1.0),
    Metric("catalog", "catalog, {catalog}+ repos", "lists/s", 1.0),
]


@dataclass
class Sample:
    value: float
    detail: dict[str, float | int | bool | str] = field(default_factory=dict)


@dataclass
class ManifestRef:
    tag: str
    digest: str
    size: int


@dataclass
class Side:
    """Per-registry state carried between workloads."""

    server: Server
    config: Blob
    layer: Blob
    last_big: Blob | None = None
    tags_repo: str = ""
    refs: list[ManifestRef] = field(default_factory=list)
    catalog_repos: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)
    mount_fallbacks: int = 0

    @property
    def url(self) -> str:
        return self.server.base_url


def titled(metrics: list[Metric], settings: Settings) -> list[Metric]:
    """Metric titles with this run's actual sizes (quick mode uses smaller ones)."""
    sizes = {
        "blob": f"{settings.blob_mib} MiB",
        "chunks": settings.chunks,
        "small": f"{settings.small_blob_size // 1024} KiB",
        "small_clients": settings.small_clients,
        "manifest_clients": settings.manifest_clients,
        "head_clients": settings.head_clients,
        "tags": settings.manifests,
        "page": settings.list_page,
        "catalog": settings.catalog_repos,
    }
    return [Metric(m.key, m.title.format(**sizes), m.unit, m.target) for m in metrics]


def _load_sample(result: LoadResult, per_op: float = 1.0) -> Sample:
    return Sample(
        result.rate * per_op,
        {
            "ops": result.ops,
            "seconds": round(result.seconds, 4),
            "p50_ms": round(result.percentile(50) * 1000, 3),
            "p99_ms": round(result.percentile(99) * 1000, 3),
            "truncated": result.truncated,
        },
    )


# --- setup -----------------------------------------------------------------


def push_tiny_repo(
    client: Client, side: Side, repo: str, tag: str, with_layer: bool = True
) -> None:
    """A repository holding one tagged manifest, its blobs mounted from BASE_REPO."""
    blobs = [side.config, side.layer] if with_layer else [side.config]
    for blob in blobs:
        if not ops.mount(client, repo, BASE_REPO, blob):
            side.mount_fallbacks += 1
    body = manifest(
        side.config, [side.layer] if with_layer else [], {"org.dockyard.bench.repo": repo}
    )
    ops.put_manifest(client, repo, tag, body, sha256_digest(body))


def setup_side(server: Server, settings: Settings) -> Side:
    """Untimed: base image blobs, plus the repositories the catalog lists."""
    config, layer = tiny_image()
    side = Side(server, config, layer)
    with Client(server.base_url) as client:
        ops.ensure_blob(client, BASE_REPO, config)
        ops.ensure_blob(client, BASE_REPO, layer)
    side.catalog_repos = [f"bench/catalog/repo-{i:05d}" for i in range(settings.catalog_repos)]

    def create(client: Client, i: int) -> None:
        push_tiny_repo(client, side, side.catalog_repos[i], "latest")

    result = run_concurrent(server.base_url, 8, len(side.catalog_repos), 600.0, create)
    if result.truncated:
        raise RuntimeError(f"{server.label}: catalog setup did not finish in time")
    return side


# --- workloads -------------------------------------------------------------


def _big_push(
    key: str, push: Callable[[Client, Blob, Settings], None]
) -> Callable[[Side, Settings, int], dict[str, Sample]]:
    def run(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
        blob = random_blob(settings.blob_bytes)  # new digest for every push
        with Client(side.url) as client:
            t0 = time.perf_counter()
            push(client, blob, settings)
            elapsed = time.perf_counter() - t0
            # Cheap proof the registry really stored it under that digest.
            resp = client.request("HEAD", f"/v2/{BIG_REPO}/blobs/{blob.digest}")
            resp.expect_header("Docker-Content-Digest", blob.digest)
            resp.expect_header("Content-Length", str(blob.size))
        side.last_big = blob
        return {key: Sample(blob.size / MiB / elapsed, {"seconds": round(elapsed, 4)})}

    return run


push_monolithic = _big_push("push_monolithic", lambda c, b, s: ops.push_monolithic(c, BIG_REPO, b))
push_chunked = _big_push("push_chunked", lambda c, b, s: ops.push_chunked(c, BIG_REPO, b, s.chunks))
push_streamed = _big_push("push_streamed", lambda c, b, s: ops.push_streamed(c, BIG_REPO, b))


def pull(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    blob = side.last_big
    assert blob is not None, "pull runs after a push"
    buf = bytearray(blob.size)
    # Fault every page in now, not while the clock runs.
    buf[::4096] = b"\x01" * len(range(0, blob.size, 4096))
    with Client(side.url) as client:
        t0 = time.perf_counter()
        ops.pull_into(client, BIG_REPO, blob.digest, blob.size, buf)
        elapsed = time.perf_counter() - t0
    ops.verify_pulled(buf, blob.digest, f"{side.url}/v2/{BIG_REPO}/blobs/{blob.digest}")
    return {"pull": Sample(blob.size / MiB / elapsed, {"seconds": round(elapsed, 4)})}


def small_push(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    repo = f"bench/small-r{round_no}"
    raw = os.urandom(settings.small_blobs * settings.small_blob_size)
    size = settings.small_blob_size
    blobs = [
        Blob(raw[i * size : (i + 1) * size], sha256_digest(raw[i * size : (i + 1) * size]))
        for i in range(settings.small_blobs)
    ]

    def op(client: Client, i: int) -> None:
        ops.push_small(client, repo, blobs[i])

    result = run_concurrent(side.url, settings.small_clients, len(blobs), settings.time_limit, op)
    return {"small_push": _load_sample(result)}


def manifest_put(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    """Push ``settings.manifests`` distinct tagged manifests into a fresh repository.

    That repository then serves the GET/HEAD/tags-list workloads of this round.
    """
    repo = f"bench/tags-r{round_no}"
    with Client(side.url) as client:
        for blob in (side.config, side.layer):
            if not ops.mount(client, repo, BASE_REPO, blob):
                side.mount_fallbacks += 1
    nonce = os.urandom(8).hex()
    bodies = [
        manifest(
            side.config,
            [side.layer],
            {"org.dockyard.bench.index": str(i), "org.dockyard.bench.nonce": nonce},
        )
        for i in range(settings.manifests)
    ]
    refs = [ManifestRef(f"v{i:05d}", sha256_digest(b), len(b)) for i, b in enumerate(bodies)]

    def op(client: Client, i: int) -> None:
        ops.put_manifest(client, repo, refs[i].tag, bodies[i], refs[i].digest)

    result = run_concurrent(
        side.url, settings.manifest_clients, len(bodies), settings.time_limit, op
    )
    # Later workloads may only use manifests that were actually pushed.
    side.tags_repo, side.refs = repo, refs[: result.ops]
    return {"manifest_put": _load_sample(result)}


def manifest_get(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    refs, repo = side.refs, side.tags_repo
    if not refs:
        raise RuntimeError("manifest GET needs pushed manifests")

    def op(client: Client, i: int) -> None:
        ref = refs[(i * 7919) % len(refs)]  # spread requests over all tags
        ops.get_manifest(client, repo, ref.tag, ref.digest)

    out: dict[str, Sample] = {}
    for clients in settings.get_clients:
        result = run_concurrent(side.url, clients, settings.get_requests, settings.time_limit, op)
        out[f"manifest_get_c{clients}"] = _load_sample(result)
    return out


def manifest_head(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    refs, repo = side.refs, side.tags_repo

    def op(client: Client, i: int) -> None:
        ref = refs[(i * 7919) % len(refs)]
        ops.head_manifest(client, repo, ref.tag, ref.digest, ref.size)

    result = run_concurrent(
        side.url, settings.head_clients, settings.head_requests, settings.time_limit, op
    )
    return {"manifest_head": _load_sample(result)}


def tags_list(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    repo = side.tags_repo
    expected = sorted(r.tag for r in side.refs)
    out: dict[str, Sample] = {}
    for key, page in (("tags_list", None), ("tags_list_paged", settings.list_page)):

        def op(client: Client, i: int, page: int | None = page) -> None:
            tags = ops.list_tags(client, repo, page, side.notes)
            if sorted(tags) != expected or len(tags) != len(set(tags)):
                raise ProtocolError(
                    f"tags list of {repo} (n={page}) returned {len(tags)} tags, "
                    f"expected the {len(expected)} pushed",
                    method="GET",
                    url=f"{side.url}/v2/{repo}/tags/list",
                )

        result = run_concurrent(
            side.url, settings.list_clients, settings.list_requests, settings.time_limit, op
        )
        out[key] = _load_sample(result)
    return out


def catalog(side: Side, settings: Settings, round_no: int) -> dict[str, Sample]:
    expected = set(side.catalog_repos)

    def op(client: Client, i: int) -> None:
        repos = ops.catalog(client, side.notes)
        missing = expected.difference(repos)
        if missing or len(repos) != len(set(repos)) or repos != sorted(repos):
            raise ProtocolError(
                f"catalog: {len(missing)} pushed repositories missing "
                f"(e.g. {sorted(missing)[:3]}), duplicates or not sorted",
                method="GET",
                url=f"{side.url}/v2/_catalog",
            )

    result = run_concurrent(
        side.url, settings.catalog_clients, settings.catalog_requests, settings.time_limit, op
    )
    return {"catalog": _load_sample(result)}


# Order matters: pull reads the last big push; GET/HEAD/tags read the
# manifests pushed by manifest_put in the same round.
WORKLOADS: list[tuple[str, Callable[[Side, Settings, int], dict[str, Sample]]]] = [
    ("blob push, monolithic", push_monolithic),
    ("blob push, chunked", push_chunked),
    ("blob push, docker-style", push_streamed),
    ("blob pull", pull),
    ("small blob push", small_push),
    ("manifest PUT", manifest_put),
    ("manifest GET", manifest_get),
    ("manifest HEAD", manifest_head),
    ("tags list", tags_list),
    ("catalog", catalog),
]
