"""Search workload (dockyard only: the reference registry has no search API)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from urllib.parse import quote

from bench import wrk
from bench.client import Client, ProtocolError
from bench.loadgen import run_concurrent
from bench.settings import Settings
from bench.workloads import Sample, Side, push_tiny_repo

TEAMS = [
    "acme", "globex", "initech", "umbrella", "hooli",
    "stark", "wayne", "tyrell", "cyberdyne", "aperture",
]  # fmt: skip
WORDS = [
    "api", "web", "worker", "db", "cache", "proxy", "auth", "billing",
    "search", "queue", "gateway", "frontend", "backend", "scheduler", "metrics",
    "logs", "mailer", "storage", "cdn", "ml", "etl", "stream", "notifier",
    "payments", "catalog", "inventory", "orders", "users", "admin", "reports",
]  # fmt: skip


def search_repo_name(i: int) -> str:
    """Deterministic, realistic-looking names: ``team/word-word-NNNNNN``."""
    team = TEAMS[i % len(TEAMS)]
    a = WORDS[(i // len(TEAMS)) % len(WORDS)]
    b = WORDS[(i * 7 + 3) % len(WORDS)]
    return f"{team}/{a}-{b}-{i:06d}"


@dataclass
class PopulateResult:
    requested: int
    created: int
    seconds: float
    truncated: bool

    @property
    def repos_per_second(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------------------
# populate_search: THE SLOW PART. Creating 100,000 repositories through the
# public HTTP API costs two requests each (cross-repo mount of a tiny config
# blob + a manifest PUT). The benchmark measures and reports how long that
# takes. If it is too slow for routine runs, this is the one function to
# replace with a faster path (e.g. writing dockyard's index directly); the
# search measurement below only needs the repositories to exist.
# ---------------------------------------------------------------------------
def populate_search(
    dockyard: Side, count: int, *, clients: int = 16, time_limit: float = 1200.0
) -> PopulateResult:
    """Create ``count`` repositories on ``dockyard`` through the HTTP API, concurrently."""

    def op(client: Client, i: int) -> None:
        push_tiny_repo(client, dockyard, search_repo_name(i), "latest", with_layer=False)

    result = run_concurrent(dockyard.url, clients, count, time_limit, op)
    return PopulateResult(count, result.ops, result.seconds, result.truncated)


def _search(client: Client, term: str, n: int) -> list[str]:
    resp = client.request("GET", f"/v1/search?q={quote(term, safe='')}&n={n}")
    try:
        doc = json.loads(resp.body)
    except ValueError as exc:
        raise resp.fail(f"search body is not JSON: {exc}") from exc
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in results
    ):
        raise resp.fail("search body is not {results: [{name: ...}, ...]}")
    if len(results) > n:
        raise resp.fail(f"search returned {len(results)} results, more than n={n}")
    return [r["name"] for r in results]


def wait_indexed(dockyard: Side, created: int, n: int, timeout: float = 60.0) -> float:
    """Seconds until the last created repository is searchable (indexing may lag)."""
    name = search_repo_name(created - 1)
    t0 = time.perf_counter()
    with Client(dockyard.url) as client:
        while time.perf_counter() - t0 < timeout:
            if name in _search(client, name, n):
                return time.perf_counter() - t0
            time.sleep(0.2)
    raise ProtocolError(
        f"repository {name} not found by search {timeout:.0f}s after it was pushed",
        method="GET",
        url=f"{dockyard.url}/v1/search?q={quote(name, safe='')}&n={n}",
    )


def measure_search(dockyard: Side, settings: Settings, created: int, round_no: int = 0) -> Sample:
    """p99 latency of ``GET /v1/search`` with ``settings.search_clients`` clients.

    Even requests search a common word (many matches, ranking and paging
    matter); odd ones a full repository name, which must be found. Each round
    asks for other names, so no round is answered from what an earlier one
    left in a cache; the common words repeat, as a registry's searches do.
    """
    n = settings.search_page
    offset = round_no * settings.search_queries

    def op(client: Client, i: int) -> None:
        i += offset
        if i % 2 == 0:
            term = WORDS[(i // 2) % len(WORDS)]
            if not _search(client, term, n):
                raise ProtocolError(
                    f"search for common term {term!r} found nothing",
                    method="GET",
                    url=f"{dockyard.url}/v1/search?q={term}&n={n}",
                )
        else:
            name = search_repo_name((i * 104_729) % created)
            if name not in _search(client, name, n):
                raise ProtocolError(
                    f"search for {name!r} did not return that repository",
                    method="GET",
                    url=f"{dockyard.url}/v1/search?q={quote(name, safe='')}&n={n}",
                )

    result = run_concurrent(
        dockyard.url, settings.search_clients, settings.search_queries, settings.time_limit, op
    )
    return Sample(
        result.percentile(99) * 1000,
        {
            "ops": result.ops,
            "rate": round(result.rate, 1),
            "p50_ms": round(result.percentile(50) * 1000, 3),
            "truncated": result.truncated,
        },
    )


def _wrk_queries(created: int, settings: Settings, round_no: int) -> list[str]:
    """This round's slice of a fixed shuffle of every repository name, leaving out
    the names `measure_search` asks for: no query repeats within a run while the
    repositories last."""
    python_asked = {
        (i * 104_729) % created
        for r in range(settings.rounds)
        for i in range(r * settings.search_queries, (r + 1) * settings.search_queries)
        if i % 2
    }
    order = [i for i in random.Random(12).sample(range(created), created)
             if i not in python_asked]
    per_round = len(order) // max(1, settings.rounds)
    chosen = order[round_no * per_round:(round_no + 1) * per_round]
    return [f"/v1/search?q={quote(search_repo_name(i), safe='')}&n={settings.search_page}"
            for i in chosen]


def measure_search_wrk(dockyard: Side, settings: Settings, created: int,
                       round_no: int) -> dict[str, Sample]:
    """Search from wrk, a separate process: p99 at an offered rate (each of the
    connections paced by Lua `delay()`), then the closed-loop rate; each request a
    full repository name not asked before in this run."""
    queries = _wrk_queries(created, settings, round_no)
    half = len(queries) // 2
    clients = settings.search_wrk_clients
    pace_ms = clients / settings.search_wrk_rate * 1000
    paced = wrk.run(dockyard.url, queries[:half], clients, settings.search_wrk_seconds,
                    pace_ms=pace_ms)
    closed = wrk.run(dockyard.url, queries[half:], clients, settings.search_wrk_seconds)
    out = {}
    for key, result, value, count in (("search_paced_p99", paced, paced.p99_ms, half),
                                      ("search_closed_rate", closed, closed.rate,
                                       len(queries) - half)):
        detail = {**result.to_dict(), "distinct_queries": count,
                  "repeated": result.rate * settings.search_wrk_seconds > count}
        out[key] = Sample(value, detail)
    return out
