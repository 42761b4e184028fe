"""Workload sizes for full and quick runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    blob_mib: int = 256
    chunks: int = 4  # PATCHes per chunked push
    small_blobs: int = 2000
    small_blob_size: int = 4096
    small_clients: int = 16
    manifests: int = 1000  # also the tag count for the tags-list workloads
    manifest_clients: int = 16
    get_requests: int = 2000
    get_clients: tuple[int, ...] = (1, 16, 64)
    head_requests: int = 2000
    head_clients: int = 16
    list_requests: int = 200
    list_page: int = 100
    list_clients: int = 4
    catalog_repos: int = 500
    catalog_requests: int = 200
    catalog_clients: int = 4
    search_repos: int = 100_000
    populate_clients: int = 16
    search_queries: int = 5000
    search_clients: int = 16
    search_page: int = 25
    # wrk curves of small requests (bench/wrk.py): clients per point, seconds per point.
    curve_clients: tuple[int, ...] = (1, 16, 64, 256)
    # Quick mode measures the other curves at fewer points than GET by tag.
    curve_clients_other: tuple[int, ...] = (1, 16, 64, 256)
    curve_seconds: float = 5.0
    # Search through wrk from its own process: paced (offered q/s over connections)
    # and closed loop; each round asks for names no earlier round asked for.
    search_wrk_rate: float = 500.0
    search_wrk_clients: int = 64
    search_wrk_seconds: float = 10.0
    # Upper bound on any single timed load loop; a slower server reports
    # fewer operations (marked truncated) instead of stalling the run.
    time_limit: float = 60.0
    # Population stops here even if short of search_repos (the count reached
    # is reported); keeps a full run near 15 minutes on 2 cores.
    populate_time_limit: float = 600.0

    @property
    def blob_bytes(self) -> int:
        return self.blob_mib * MiB


FULL = Settings()

QUICK = replace(
    FULL,
    rounds=1,
    blob_mib=32,
    small_blobs=300,
    manifests=200,
    get_requests=400,
    head_requests=400,
    list_requests=40,
    catalog_repos=50,
    catalog_requests=40,
    search_repos=2000,
    search_queries=1000,
    curve_clients_other=(16, 256),
    curve_seconds=1.0,
    search_wrk_seconds=3.0,
    time_limit=10.0,
    populate_time_limit=30.0,
)
