"""The collector's mark on generated graphs: image indexes, referrers with subject
chains, layers shared across repositories, blobs mounted from one into another."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gc import graph

CUTOFF = 1_000


@st.composite
def repositories(draw: st.DrawFn) -> list[graph.Repo]:
    # One pool of blobs for all repositories: shared layers and mounts.
    blob_pool = [f"sha256:{i:064x}" for i in range(draw(st.integers(1, 12)))]
    repos = []
    for r in range(draw(st.integers(1, 3))):
        name = f"repo{r}"
        count = draw(st.integers(0, 8))
        digests = [f"sha256:{(r + 1) * 1000 + i:064x}" for i in range(count)]
        manifests = {}
        for i, digest in enumerate(digests):
            layers = draw(st.lists(st.sampled_from(blob_pool), max_size=4))
            # An index names manifests pushed before it (children exist first).
            children = draw(st.lists(st.sampled_from(digests[:i]), max_size=3)) if i else []
            subject = draw(st.none() | st.sampled_from(digests)) if digests else None
            if subject == digest:
                subject = None
            mtime = draw(st.none() | st.integers(0, 2 * CUTOFF))
            manifests[digest] = graph.Node(digest, tuple(layers + children), subject, mtime)
        tags = {}
        for t in range(draw(st.integers(0, 4))):
            if digests:
                tags[f"t{t}"] = draw(st.sampled_from(digests))
        repos.append(graph.Repo(name, tags, manifests))
    return repos


policies = st.builds(graph.Policy, st.just(CUTOFF), st.none() | st.integers(0, 2 * CUTOFF))


def reachable(repo: graph.Repo, roots: set[str]) -> set[str]:
    """Reachability by repeated passes over the edge list: a different algorithm from
    the collector's worklist, so that the two check each other."""
    edges = []
    for node in repo.manifests.values():
        edges += [(node.digest, r) for r in node.refs if r in repo.manifests]
        if node.subject in repo.manifests:
            edges.append((node.subject, node.digest))
    seen = set(roots)
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            if a in seen and b not in seen:
                seen.add(b)
                changed = True
    return seen


def roots(repo: graph.Repo, policy: graph.Policy) -> set[str]:
    out = set(repo.tags.values())
    for d, node in repo.manifests.items():
        fresh = node.mtime_ns is not None and node.mtime_ns >= policy.cutoff_ns
        young = policy.untagged_cutoff_ns is None or (
            node.mtime_ns is not None and node.mtime_ns >= policy.untagged_cutoff_ns)
        if fresh or young:
            out.add(d)
    return out


@settings(max_examples=150, deadline=None)
@given(repositories(), policies)
def test_kept_is_exactly_what_roots_reach(repos: list[graph.Repo], policy: graph.Policy) -> None:
    marks = graph.mark(repos, policy)
    for repo in repos:
        assert marks.manifests[repo.name] == reachable(repo, roots(repo, policy))


@settings(max_examples=150, deadline=None)
@given(repositories(), policies)
def test_every_blob_a_kept_manifest_needs_is_kept(repos: list[graph.Repo],
                                                  policy: graph.Policy) -> None:
    marks = graph.mark(repos, policy)
    needed: set[str] = set()
    for repo in repos:
        for digest in marks.manifests[repo.name]:
            needed.add(digest)
            needed.update(repo.manifests[digest].refs)
            assert set(repo.manifests[digest].refs) <= marks.layers[repo.name]
    # Kept: what a kept manifest of any repository needs, and nothing more.
    assert marks.blobs == needed


@settings(max_examples=100, deadline=None)
@given(repositories(), policies)
def test_tagged_images_and_their_subject_chains_stay(repos: list[graph.Repo],
                                                     policy: graph.Policy) -> None:
    marks = graph.mark(repos, policy)
    for repo in repos:
        kept = marks.manifests[repo.name]
        assert set(repo.tags.values()) <= kept
        for node in repo.manifests.values():
            # A referrer of a kept manifest stays: its signature, its SBOM's signature.
            if node.subject in kept:
                assert node.digest in kept
            # An index keeps its children.
            if node.digest in kept:
                assert {r for r in node.refs if r in repo.manifests} <= kept


@settings(max_examples=100, deadline=None)
@given(repositories())
def test_untagged_policy_off_keeps_every_manifest(repos: list[graph.Repo]) -> None:
    marks = graph.mark(repos, graph.Policy(CUTOFF, None))
    for repo in repos:
        assert marks.manifests[repo.name] == set(repo.manifests)


@settings(max_examples=100, deadline=None)
@given(repositories(), st.data())
def test_released_manifests_go_unless_reached(repos: list[graph.Repo],
                                              data: st.DataObject) -> None:
    """A manifest whose tags retention removed goes even with untagged manifests kept,
    unless it is fresh or something kept reaches it."""
    policy = graph.Policy(CUTOFF, None)
    released = {r.name: frozenset(data.draw(st.sets(st.sampled_from(sorted(r.manifests)))
                                            if r.manifests else st.just(set())))
                for r in repos}
    for repo in repos:
        for digest in released[repo.name]:
            repo.tags = {t: d for t, d in repo.tags.items() if d != digest}
    marks = graph.mark(repos, policy, released)
    for repo in repos:
        others = {d for d, n in repo.manifests.items()
                  if d not in released[repo.name]
                  or (n.mtime_ns is not None and n.mtime_ns >= CUTOFF)}
        assert marks.manifests[repo.name] == reachable(repo, others | set(repo.tags.values()))
