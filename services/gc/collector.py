"""The garbage collector: mark and sweep while pushes and pulls go on.

It works through three interfaces only: the storage root's layout and
enumerations (`services.storage.paths`, `inventory`), the blob store and its
fences (`services.storage.blobstore`, `fences`), and the index (its typed
reader `services.index.read_model` and the atomic scripts of
`services.index.store`, which publish the events that keep every cache
honest).

One run:

1. **Barrier.** Wait for every manifest PUT that is between its first touch
   and its index record, and take the run's start time *T* (`Fences.barrier`).
2. **Retention.** Remove the tags that the policies select (`retention`).
3. **Mark.** Read the index and the disk, and compute what is kept (`graph`).
4. **Sweep,** in an order that never leaves a reference to a missing file
   behind: manifests (index entry first, then the link), then layer links,
   then blobs, then abandoned upload sessions; last, repositories left
   without manifests leave the catalog.

**Why a concurrent push never loses a blob.** Call *cutoff* = *T* - grace.
The collector deletes a file only when the mark did not keep it *and* its
mtime, read under the lock that writers take to touch it, is before the
cutoff. Every writer that creates or relies on a blob or link sets its mtime
to now under that lock, and fails if it is gone (`fences`, `BlobStore`):
an upload's commit, a mount, a link, a HEAD that lets a client skip an upload,
and every reference a manifest PUT checks (layers, config, an index's
children, its own bytes and link). Now take a manifest M that some push
acknowledged, and a file F it needs:

- If M's PUT touched F before *T*, the barrier waited for M's index record,
  so the mark read M and kept F (M is tagged, or fresh, or reached from
  something that is).
- If it touched F at or after *T*, F's mtime is at least *T*, past the
  cutoff, and the delete (which checks the mtime under the same lock) keeps
  it; or the delete ran first, then the touch failed and the PUT was refused
  (BLOB_UNKNOWN), never acknowledged.

Uploads, mounts and links made while the collection runs carry mtimes past
the cutoff the same way, so they survive it whether or not a manifest names
them yet; the grace period extends that to files touched shortly before the
run, so a push in progress (layers first, manifest last) is not refused.

**Crash safety.** Each delete is one unlink or one atomic index script, of
something no tag reaches, in an order in which nothing kept ever names a
missing file: kill -9 at any point leaves every tagged image whole, and the
next run deletes what this one did not. Locks are flocks, released by the
kernel when the collector dies.

**On an object store** the fences are `services.storage.redis_fences`: touch
times kept in the index's Redis instead of mtimes, dooms instead of exclusive
stripes, and leases instead of flocks. The argument above holds word for word
with "touched" read as "its touch recorded in Redis" and "under the lock" as
"ordered against the doom by Redis".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from services.gc import graph, retention
from services.gc.events import GcEvents
from services.gc.report import Item, Progress, Report, Silent
from services.index.read_model import IndexReader, RepositoryState
from services.index.store import IndexStore
from services.storage import inventory
from services.storage import manifest_format as mf
from services.storage.blobstore import BlobStore
from services.storage.inventory import FileInfo
from services.storage.paths import Keys
from services.storage.uploads import UploadStore
from shared import errors
from shared.validation import parse_digest

log = logging.getLogger("dockyard.gc")
NS = 1_000_000_000
# Manifests deleted per round trip to the index (and per hold of their locks).
BATCH = 100


@dataclass(frozen=True)
class Settings:
    grace: float = 3600.0
    # None keeps untagged manifests; else seconds after their last push.
    untagged_max_age: float | None = None
    policies: tuple[retention.Policy, ...] = ()
    upload_max_age: int = 86400


@dataclass
class Snapshot:
    """What the mark read: the index, the disk's links, and every blob."""

    repos: dict[str, graph.Repo] = field(default_factory=dict)
    layers: dict[str, list[FileInfo]] = field(default_factory=dict)
    blobs: list[FileInfo] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    states: dict[str, RepositoryState] = field(default_factory=dict)


class Collector:
    def __init__(self, blobs: BlobStore, index: IndexStore, reader: IndexReader,
                 settings: Settings, progress: Progress | None = None,
                 events: GcEvents | None = None) -> None:
        self.blobs = blobs
        self.events = events or GcEvents(enabled=False)
        self.layout = blobs.layout
        self.fences = blobs.fences
        self.index = index
        self.reader = reader
        self.settings = settings
        self.progress = progress or Silent()

    # -- one run -------------------------------------------------------------------

    def run(self, *, dry_run: bool = False, wait: bool = False) -> Report | None:
        """Collect once; None when another collection holds this storage root."""
        with self.fences.collecting(wait=wait) as ours:
            if not ours:
                return None
            report = Report(dry_run=dry_run)
            self.events.new_run()
            self.progress.phase("barrier")
            start_ns = self.fences.barrier()
            cutoff = start_ns - int(self.settings.grace * NS)
            untagged = (None if self.settings.untagged_max_age is None
                        else start_ns - int(self.settings.untagged_max_age * NS))
            snapshot = self.read()
            released = self._retention(snapshot, start_ns / NS, report, dry_run)
            self.progress.phase("mark", len(snapshot.repos))
            marks = graph.mark(snapshot.repos.values(), graph.Policy(cutoff, untagged),
                               released)
            self.progress.advance(len(snapshot.repos))
            self._sweep_manifests(snapshot, marks, cutoff, report, dry_run)
            self._sweep_layers(snapshot, marks, cutoff, report, dry_run)
            self._sweep_blobs(snapshot, marks, cutoff, report, dry_run)
            self._sweep_uploads(start_ns / NS, report, dry_run)
            if not dry_run:
                # A touch older than this compares as the object's own last write
                # does, for this run's cutoff and any later one's (even a grace of
                # up to twice this one's).
                self.fences.prune(cutoff - int(self.settings.grace * NS))
            self.snapshot, self.marks = snapshot, marks
            self.progress.done()
            report.finished = time.time()
            return report

    # -- reading -------------------------------------------------------------------

    def read(self) -> Snapshot:
        snap = Snapshot()
        self.progress.phase("index")
        for state in self.reader.repository_states():
            snap.states[state.name] = state
            snap.repos[state.name] = graph.Repo(state.name, dict(state.tags), {
                d: graph.Node(d, m.refs, m.subject) for d, m in state.manifests.items()})
            self.progress.advance()
        backend = self.blobs.backend
        names = sorted(set(snap.repos) | set(inventory.repositories(self.layout, backend)))
        self.progress.phase("links", len(names))
        for name in names:
            repo = snap.repos.setdefault(name, graph.Repo(name))
            for link in inventory.manifest_links(self.layout, name, backend):
                d = link.name
                node = repo.manifests.get(d)
                repo.manifests[d] = (graph.Node(d, node.refs, node.subject, link.mtime_ns)
                                     if node else self._unindexed(link))
            snap.layers[name] = list(inventory.layer_links(self.layout, name, backend))
            self.progress.advance()
        self.progress.phase("blobs")
        for info in inventory.blobs(self.layout, backend):
            snap.blobs.append(info)
            snap.sizes[info.name] = info.size
            self.progress.advance(1, info.size)
        return snap

    def _unindexed(self, link: FileInfo) -> graph.Node:
        """A manifest on disk that the index does not know: its references come from
        its bytes (kept conservatively: what it names stays while it does)."""
        try:
            parsed = mf.parse(self.blobs.read(link.digest), None)
        except (OSError, errors.RegistryError):
            return graph.Node(link.name, (), None, link.mtime_ns, indexed=False)
        refs = tuple(str(d) for d in parsed.blobs + parsed.manifests)
        subject = str(parsed.subject) if parsed.subject else None
        return graph.Node(link.name, refs, subject, link.mtime_ns, indexed=False)

    # -- retention -----------------------------------------------------------------

    def _retention(self, snap: Snapshot, now: float, report: Report,
                   dry_run: bool) -> dict[str, frozenset[str]]:
        """Remove the tags the policies select; returns, per repository, the manifests
        that lost their last tag, which the untagged policy no longer protects."""
        released: dict[str, frozenset[str]] = {}
        if not self.settings.policies:
            return released
        self.progress.phase("retention")
        for name, repo in snap.repos.items():
            policy = retention.policy_for(list(self.settings.policies), name)
            if policy is None or not repo.tags:
                continue
            times = snap.states[name].tag_times if name in snap.states else {}
            pushed = {t: times.get(t) or self._pushed(repo, d) for t, d in repo.tags.items()}
            removals = retention.select(policy, name, repo.tags, pushed, now)
            for removal in removals:
                if dry_run or self.index.delete_tag_if(
                        name, removal.tag, removal.digest,
                        self.events.tag_removed(name, removal.tag)):
                    report.add(Item("tag", name, removal.tag))
                    self.progress.advance()
                del repo.tags[removal.tag]
            still = set(repo.tags.values())
            released[name] = frozenset(r.digest for r in removals if r.digest not in still)
        return released

    @staticmethod
    def _pushed(repo: graph.Repo, digest: str) -> float:
        """A tag's age when the index has no time for it: its manifest's last push."""
        node = repo.manifests.get(digest)
        return (node.mtime_ns or 0) / NS if node else 0.0

    # -- sweeping ------------------------------------------------------------------

    def _sweep_manifests(self, snap: Snapshot, marks: graph.Marks, cutoff: int,
                         report: Report, dry_run: bool) -> None:
        doomed = [(name, node) for name, repo in snap.repos.items()
                  for d, node in repo.manifests.items() if d not in marks.manifests[name]]
        self.progress.phase("manifests", len(doomed))
        emptied: set[str] = set()
        for i in range(0, len(doomed), BATCH):
            batch = doomed[i:i + BATCH]
            done = batch if dry_run else self._delete_manifests(batch, cutoff)
            report.spared += len(batch) - len(done)
            for name, node in done:
                report.add(Item("manifest", name, node.digest))
                emptied.add(name)
            self.progress.advance(len(batch))
        if dry_run:
            return
        for name in emptied:
            if not marks.manifests[name]:
                self.index.forget_repository(name)

    def _delete_manifests(self, batch: list[tuple[str, graph.Node]],
                          cutoff: int) -> list[tuple[str, graph.Node]]:
        """As a manifest DELETE does, for a batch: holding what writers of the links
        take (`fences.claim`), the index entries first (one round trip), then the
        links. A manifest whose link a writer touched since the mark (a PUT of it,
        or of an index naming it) is skipped."""
        links = [FileInfo(d, 0, node.mtime_ns or 0, node.digest, "",
                          Keys.manifest_link(name, d))
                 for name, node in batch for d in [parse_digest(node.digest)]]
        locks = [Keys.manifest_lock(name, link.digest)
                 for (name, _), link in zip(batch, links, strict=True)]
        with self.fences.claim(links, cutoff, locks) as untouched:
            doomed = [(item, link) for item, link, ok in zip(batch, links, untouched,
                                                              strict=True) if ok]
            self.index.delete_manifests(
                [(n, node.digest, node.subject) for (n, node), _ in doomed],
                [self.events.manifest_removed(n, node.digest) for (n, node), _ in doomed])
            self.fences.delete_claimed([link.key for _, link in doomed])
        # The index's events went out before the deletes: announce them again.
        for name in {name for (name, _), _ in doomed}:
            self.index.repository_changed(name)
        return [item for item, _ in doomed]

    def _sweep_layers(self, snap: Snapshot, marks: graph.Marks, cutoff: int,
                      report: Report, dry_run: bool) -> None:
        doomed = [(name, link) for name, links in snap.layers.items() for link in links
                  if link.name not in marks.layers.get(name, ())
                  and link.mtime_ns < cutoff]
        self.progress.phase("layer links", len(doomed))
        sizes = [0] * len(doomed) if dry_run else self.fences.remove_all_if_untouched(
            [link for _, link in doomed], cutoff)
        for (name, link), size in zip(doomed, sizes, strict=True):
            if size is None:
                report.spared += 1
            else:
                report.add(Item("layer-link", name, link.name))
        self.progress.advance(len(doomed))

    def _sweep_blobs(self, snap: Snapshot, marks: graph.Marks, cutoff: int,
                     report: Report, dry_run: bool) -> None:
        doomed = [b for b in snap.blobs
                  if b.name not in marks.blobs and b.mtime_ns < cutoff]
        self.progress.phase("blobs deleted", len(doomed))
        sizes = [b.size for b in doomed] if dry_run else self.fences.remove_all_if_untouched(
            doomed, cutoff)
        for blob, size in zip(doomed, sizes, strict=True):
            if size is None:
                report.spared += 1
            else:
                report.add(Item("blob", "", blob.name, size))
                self.progress.advance(1, size)

    def _sweep_uploads(self, now: float, report: Report, dry_run: bool) -> None:
        self.progress.phase("uploads")
        store = UploadStore(self.layout, self.blobs, max_per_repository=1,
                            max_age=self.settings.upload_max_age)
        for session in store.abandoned(now):
            if not dry_run:
                store.remove_abandoned(session)
            report.add(Item("upload", session.repository or "", session.upload_id,
                            session.size))
            self.progress.advance(1, session.size)
        if not dry_run:
            store.purge_tmp(now)

