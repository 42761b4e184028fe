"""The mark: which manifests, blobs and layer links a collection keeps.

Pure functions over plain data, so the rules can be read (and tested with
generated graphs) apart from disks, locks and Redis.

A manifest of repository R is **kept** when it is a root or is reached from
a kept one:

- roots: every tagged manifest; every manifest a writer touched at or after
  the cutoff (``mtime_ns >= cutoff_ns``: pushed, or relied on by a push,
  during the grace period or the collection); and, by the untagged policy,
  every manifest (policy off) or those pushed after ``untagged_cutoff_ns``.
  A manifest whose tags a retention policy removed in this run is released
  from the untagged policy: it stays only if something else keeps it.
- reached: a kept manifest keeps the manifests it names (an index's
  children) and the manifests whose ``subject`` it is (referrers:
  signatures, SBOMs, and their own referrers in turn). Both stay within R,
  as the distribution spec scopes them.

A **blob** is kept when any kept manifest of any repository is it or names
it (manifest bytes are blobs too), whatever repository it was uploaded or
mounted into. A **layer link** of R is kept when a kept manifest of R names
its blob; fresh links are kept by the collector, which checks times again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Node:
    """A manifest of one repository, as the index and the disk know it."""

    digest: str
    refs: tuple[str, ...] = ()
    subject: str | None = None
    # The manifest link's mtime; None when the disk has no link.
    mtime_ns: int | None = None
    indexed: bool = True


@dataclass(slots=True)
class Repo:
    name: str
    tags: dict[str, str] = field(default_factory=dict)     # tag -> digest
    manifests: dict[str, Node] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    cutoff_ns: int
    # None: untagged manifests are kept; else those pushed before it may go.
    untagged_cutoff_ns: int | None = None


@dataclass(slots=True)
class Marks:
    manifests: dict[str, set[str]] = field(default_factory=dict)   # repo -> kept digests
    blobs: set[str] = field(default_factory=set)
    layers: dict[str, set[str]] = field(default_factory=dict)      # repo -> digests named


def is_root(node: Node, tagged: bool, policy: Policy, released: bool) -> bool:
    if tagged:
        return True
    if node.mtime_ns is not None and node.mtime_ns >= policy.cutoff_ns:
        return True
    if released:
        return False
    if policy.untagged_cutoff_ns is None:
        return True
    return node.mtime_ns is not None and node.mtime_ns >= policy.untagged_cutoff_ns


def mark_repository(repo: Repo, policy: Policy,
                    released: frozenset[str] = frozenset()) -> set[str]:
    """The kept manifests of one repository."""
    tagged = set(repo.tags.values())
    referrers: dict[str, list[str]] = {}
    for node in repo.manifests.values():
        if node.subject is not None:
            referrers.setdefault(node.subject, []).append(node.digest)
    kept = {d for d, node in repo.manifests.items()
            if is_root(node, d in tagged, policy, d in released)}
    # A tag naming a manifest the repository lacks keeps nothing (fsck reports it).
    pending = list(kept)
    while pending:
        digest = pending.pop()
        node = repo.manifests[digest]
        for nxt in (*node.refs, *referrers.get(digest, ())):
            if nxt in repo.manifests and nxt not in kept:
                kept.add(nxt)
                pending.append(nxt)
    return kept


def mark(repos: Iterable[Repo], policy: Policy,
         released: dict[str, frozenset[str]] | None = None) -> Marks:
    released = released or {}
    marks = Marks()
    for repo in repos:
        kept = mark_repository(repo, policy, released.get(repo.name, frozenset()))
        marks.manifests[repo.name] = kept
        named: set[str] = set()
        for digest in kept:
            named.update(repo.manifests[digest].refs)
        marks.layers[repo.name] = named
        marks.blobs.update(named)
        marks.blobs.update(kept)
    return marks
