"""Space usage: per repository, and for the registry as a whole.

Per repository:

- ``tagged_bytes``: the bytes of its tagged images, each blob counted once
  (manifests, configs, layers; an index's children; referrers of them);
- ``exclusive_bytes``: the bytes of blobs that only it holds (named by one of
  its manifests or linked into it, and by no other repository), which
  deleting it and collecting would free.

A repository that mirrors an upstream (the pull-through cache) also carries
``cached_from``, the upstream's URL: its bytes are a cache, which a pull
fetches again once collected.

Registry-wide: ``physical_bytes`` on disk (every blob once, garbage
included), ``logical_bytes`` (the sum of every repository's ``tagged_bytes``:
what the images would take without sharing), ``referenced_bytes`` (the blobs
some tagged image needs, once each), ``reclaimable_bytes`` (what no
repository holds: the next collection's), and ``dedup_ratio`` =
logical / referenced; ``cached_bytes``, the ``tagged_bytes`` of the mirrored
repositories.

Computing it reads every blob's size, so it is never done per request: each
collection leaves it in ``gc/usage.json`` (from what it read, less what it
deleted), and the usage endpoint serves that file, computing it again in the
background when it is older than ``gc.usage_max_age`` seconds. Every answer
carries ``computed_at``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.gc import graph
from services.gc.report import Report, human_bytes, load_json, save_json

# Roots: tags only (a cutoff no mtime reaches, untagged manifests not roots).
_TAGS_ONLY = graph.Policy(cutoff_ns=2**63, untagged_cutoff_ns=2**63)


@dataclass
class View:
    """What usage is computed from: the collector's snapshot, less what it deleted."""

    repos: dict[str, graph.Repo]
    links: dict[str, set[str]]          # repo -> digests of its layer links
    sizes: dict[str, int]               # blob digest -> bytes
    removed: set[tuple[str, str, str]] = field(default_factory=set)


def view(snapshot: Any, report: Report | None = None) -> View:
    removed = {(i.kind, i.repository, i.name) for i in report.items} if report else set()
    repos = {}
    for name, repo in snapshot.repos.items():
        tags = {t: d for t, d in repo.tags.items() if ("tag", name, t) not in removed}
        manifests = {d: n for d, n in repo.manifests.items()
                     if ("manifest", name, d) not in removed}
        repos[name] = graph.Repo(name, tags, manifests)
    links = {name: {li.name for li in infos if ("layer-link", name, li.name) not in removed}
             for name, infos in snapshot.layers.items()}
    sizes = {d: s for d, s in snapshot.sizes.items() if ("blob", "", d) not in removed}
    return View(repos, links, sizes)


def _bytes(digests: set[str], sizes: dict[str, int]) -> int:
    return sum(sizes.get(d, 0) for d in digests)


def compute(v: View, now: float | None = None,
            cached_from: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """The usage answer of `v`; `cached_from` names the upstream a repository
    mirrors (None: an ordinary one)."""
    tagged: dict[str, set[str]] = {}
    held: dict[str, set[str]] = {}
    for name, repo in v.repos.items():
        kept = graph.mark_repository(repo, _TAGS_ONLY)
        tagged[name] = {d for m in kept for d in (m, *repo.manifests[m].refs)}
        held[name] = ({d for n in repo.manifests.values() for d in (n.digest, *n.refs)}
                      | v.links.get(name, set()))
    holders: dict[str, int] = {}
    for digests in held.values():
        for d in digests:
            holders[d] = holders.get(d, 0) + 1
    repositories = {}
    for name in sorted(v.repos):
        if not held[name] and not v.repos[name].tags:
            continue
        repositories[name] = {
            "tags": len(v.repos[name].tags),
            "manifests": len(v.repos[name].manifests),
            "tagged_bytes": _bytes(tagged[name], v.sizes),
            "exclusive_bytes": _bytes({d for d in held[name] if holders[d] == 1}, v.sizes),
        }
        upstream = cached_from(name) if cached_from else None
        if upstream:
            repositories[name]["cached_from"] = upstream
    logical = sum(r["tagged_bytes"] for r in repositories.values())
    referenced = _bytes(set().union(*tagged.values()) if tagged else set(), v.sizes)
    physical = sum(v.sizes.values())
    return {
        "computed_at": time.time() if now is None else now,
        "repositories": repositories,
        "registry": {
            "blobs": len(v.sizes),
            "physical_bytes": physical,
            "logical_bytes": logical,
            "referenced_bytes": referenced,
            "reclaimable_bytes": physical - _bytes(set(holders), v.sizes),
            "dedup_ratio": round(logical / referenced, 3) if referenced else 1.0,
            "cached_bytes": sum(r["tagged_bytes"] for r in repositories.values()
                                if "cached_from" in r),
        },
    }


def save(path: Path, usage: dict[str, Any]) -> None:
    save_json(path, usage)


def load(path: Path) -> dict[str, Any] | None:
    return load_json(path)


def table(usage: dict[str, Any]) -> str:
    rows = [("REPOSITORY", "TAGS", "MANIFESTS", "TAGGED", "ONLY HERE")]
    for name, r in sorted(usage["repositories"].items(), key=lambda kv: -kv[1]["tagged_bytes"]):
        rows.append((name + (" (cached)" if r.get("cached_from") else ""),
                     str(r["tags"]), str(r["manifests"]),
                     human_bytes(r["tagged_bytes"]), human_bytes(r["exclusive_bytes"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    reg = usage["registry"]
    lines += ["", f"physical {human_bytes(reg['physical_bytes'])} in {reg['blobs']} blobs; "
              f"logical {human_bytes(reg['logical_bytes'])}; referenced "
              f"{human_bytes(reg['referenced_bytes'])}; dedup ratio {reg['dedup_ratio']}; "
              f"reclaimable {human_bytes(reg['reclaimable_bytes'])}",
              time.strftime("computed %Y-%m-%d %H:%M:%S %Z",
                            time.localtime(usage["computed_at"]))]
    return "\n".join(lines)
