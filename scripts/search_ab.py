"""Search query cost of two versions of dockyard side by side, in one process.

Usage: .venv/bin/python scripts/search_ab.py BEFORE_ROOT AFTER_ROOT
(each a checkout, e.g. `git worktree add /tmp/before main`).

Builds each version's search snapshot (services/index/search.py) from the
benchmark's 100,000 repository names (bench/search.py; a third with a
description) with random push times, then measures the thread CPU time of a
query: the benchmark's mix (even: a common word, odd: one repository's full
name, 4,000 queries), 300 distinct queries, each common word with an empty
query cache, a one-letter query and a 1,000-character one. CPU time, not wall
time, so that other load on the machine distorts the comparison less; no
Redis, HTTP or router is involved.
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from types import ModuleType
from typing import Any

N = 100_000


def load(root: str) -> ModuleType:
    """services.index.search of the checkout at `root`."""
    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m.startswith(("services", "shared"))]:
        del sys.modules[name]
    module = importlib.import_module("services.index.search")
    sys.path.remove(root)
    return module


def snapshot(mod: ModuleType, names: list[str], descriptions: list[str],
             pushed: list[float]) -> Any:
    lines = [f"{n}\t{d}".lower() for n, d in zip(names, descriptions, strict=True)]
    fields: dict[str, Any] = {"version": 1, "names": names, "descriptions": descriptions,
                              "blocks": mod._blocks(lines, names, {})}
    if "recency" in mod._Snapshot.__dataclass_fields__:
        recency = [0] * len(names)
        for place, i in enumerate(sorted(range(len(names)), key=lambda i: -pushed[i])):
            recency[i] = place
        fields.update(lower_names=list(names), recency=recency)
    return mod._Snapshot(**fields)


def query(mod: ModuleType, snap: Any, q: str) -> None:
    if hasattr(mod, "query_words"):
        snap.ranked(mod.query_words(q)).page(snap, 0, 25)
    else:
        snap.matches(mod._clean(q).lower())


def cpu_ms(mod: ModuleType, snap: Any, q: str, fresh: bool = False) -> float:
    if fresh:
        snap.cache.clear()
    start = time.thread_time()
    query(mod, snap, q)
    return (time.thread_time() - start) * 1000


def run(label: str, mod: ModuleType, snap: Any, words: list[str], name_of: Any) -> None:
    mix = sorted(cpu_ms(mod, snap, words[(i // 2) % len(words)] if i % 2 == 0
                        else name_of((i * 104_729) % N)) for i in range(4000))
    distinct = sorted(cpu_ms(mod, snap, f"{words[r % 30]}-{words[(r * 7) % 30]}" if r % 2
                             else f"{r:06d}") for r in range(300))
    common = sorted(cpu_ms(mod, snap, w, fresh=True) for w in words)
    print(f"{label}: mix p50 {mix[2000]:.3f} p99 {mix[3960]:.3f} ms | distinct p50 "
          f"{distinct[150]:.3f} p99 {distinct[296]:.3f} ms | common word, uncached p50 "
          f"{common[len(common) // 2]:.2f} max {common[-1]:.2f} ms | 'a' "
          f"{cpu_ms(mod, snap, 'a', True):.0f} ms | 1,000 chars "
          f"{cpu_ms(mod, snap, 'x' * 1000, True):.2f} ms", flush=True)


def main() -> None:
    before_root, after_root = sys.argv[1], sys.argv[2]
    sys.path.insert(0, after_root)
    from bench.search import WORDS, search_repo_name

    rng = random.Random(1)
    names = sorted(search_repo_name(i) for i in range(N))
    index_of = {n: i for i, n in enumerate(names)}
    descriptions = [""] * N
    for i in range(0, N, 3):
        descriptions[index_of[search_repo_name(i)]] = (
            f"the {WORDS[i % 30]} service of team {i % 10}")
    pushed = [rng.random() for _ in names]
    before, after = load(before_root), load(after_root)
    snaps = [(label, mod, snapshot(mod, names, descriptions, pushed))
             for label, mod in (("before", before), ("after ", after))]
    for _ in range(3):
        for label, mod, snap in snaps:
            run(label, mod, snap, WORDS, search_repo_name)


if __name__ == "__main__":
    main()
