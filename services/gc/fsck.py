"""`dockyard fsck`: check that the index and the storage root agree, and every blob
is what its name says.

Findings, each by repository and digest:

==========================  ================================================  ==============
kind                        meaning                                           ``--repair``
==========================  ================================================  ==============
``blob-corrupt``            the blob's bytes do not hash to its digest        deleted, so a
                                                                              push stores it
                                                                              again
``manifest-bytes-missing``  the index has the manifest, storage no bytes      index entry and
                                                                              its tags removed
``manifest-link-missing``   bytes and index entry, but no repository link     linked, with the
                                                                              media type the
                                                                              index recorded
``manifest-unindexed``      a link and bytes the index does not know          reported
``blob-missing``            a manifest names a blob storage does not have     reported
``layer-link-dangling``     a repository's layer link to a missing blob       link removed
``tag-dangling``            a tag naming a manifest the index does not have   tag removed
==========================  ================================================  ==============

Repairs never guess: each removes what cannot be served or restores a link
from what the index recorded, and is checked again under the same locks
that pushes take just before it is made. A push in flight may look like a
``manifest-unindexed`` finding for a moment (its link is written before the
index records it); such findings are reported only. Every blob is hashed
streaming, a megabyte at a time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.gc.collector import Collector, Snapshot
from services.storage.bodies import CHUNK
from shared.validation import Digest, parse_digest


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    repository: str
    digest: str
    detail: str = ""
    repaired: bool = False


class Fsck:
    def __init__(self, collector: Collector) -> None:
        self.c = collector
        self.layout = collector.layout
        self.progress = collector.progress

    def run(self, repair: bool = False) -> list[Finding]:
        snap = self.c.read()
        findings = self._blobs(snap, repair)
        findings += self._manifests(snap, repair)
        findings += self._links(snap, repair)
        self.progress.done()
        return findings

    def _blobs(self, snap: Snapshot, repair: bool) -> list[Finding]:
        findings = []
        self.progress.phase("verify blobs", len(snap.blobs))
        for info in snap.blobs:
            try:
                actual = self._hash(info.digest)
            except FileNotFoundError:
                continue   # deleted since it was listed
            if actual != info.digest.hex:
                repaired = False
                if repair:
                    # Claimed whatever writers touched: corrupt bytes serve no one.
                    with self.c.fences.claim([info], None) as held:
                        if held[0] and self._hash(info.digest) != info.digest.hex:
                            self.c.fences.delete_claimed([info.key])
                            repaired = True
                    snap.sizes.pop(info.name, None)
                findings.append(Finding("blob-corrupt", "", info.name,
                                        f"hashes to {info.digest.algorithm}:{actual}",
                                        repaired))
            self.progress.advance(1, info.size)
        return findings

    def _hash(self, digest: Digest) -> str:
        """The blob's bytes hashed, read through the backend (a file, or an object)."""
        hasher = hashlib.new(digest.algorithm)
        with self.c.blobs.open(digest) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    def _manifests(self, snap: Snapshot, repair: bool) -> list[Finding]:
        findings = []
        self.progress.phase("manifests", len(snap.states))
        for name, state in snap.states.items():
            repo = snap.repos[name]
            for tag, digest in state.tags.items():
                if digest not in state.manifests:
                    repaired = repair and self.c.index.delete_tag_if(name, tag, digest)
                    findings.append(Finding("tag-dangling", name, digest, f"tag {tag}",
                                            repaired))
            for digest, record in state.manifests.items():
                findings += self._manifest(snap, name, digest, record.media_type,
                                           record.refs, repair)
            for digest, node in repo.manifests.items():
                if not node.indexed and digest in snap.sizes:
                    findings.append(Finding("manifest-unindexed", name, digest))
            self.progress.advance()
        return findings

    def _manifest(self, snap: Snapshot, name: str, digest: str, media_type: str,
                  refs: tuple[str, ...], repair: bool) -> list[Finding]:
        d = parse_digest(digest)
        if digest not in snap.sizes:
            tags = sorted(t for t, v in snap.states[name].tags.items() if v == digest)
            repaired = False
            if repair:
                with self.c.blobs.manifest_lock(name, d):
                    if self.c.blobs.size(d) is None:
                        self.c.index.delete_manifest(name, digest)
                        self.c.blobs.unlink_manifest(name, d)
                        repaired = True
                self.c.index.repository_changed(name)
            detail = f"tags removed: {', '.join(tags)}" if tags and repaired else (
                f"tags: {', '.join(tags)}" if tags else "")
            return [Finding("manifest-bytes-missing", name, digest, detail, repaired)]
        found = []
        if snap.repos[name].manifests[digest].mtime_ns is None:
            repaired = False
            if repair and media_type:
                with self.c.blobs.manifest_lock(name, d):
                    if self.c.blobs.manifest_media_type(name, d) is None:
                        self.c.blobs.link_manifest(name, d, media_type)
                        repaired = True
            found.append(Finding("manifest-link-missing", name, digest, media_type, repaired))
        for ref in refs:
            if ref not in snap.sizes:
                found.append(Finding("blob-missing", name, ref, f"named by {digest}"))
        return found

    def _links(self, snap: Snapshot, repair: bool) -> list[Finding]:
        findings = []
        self.progress.phase("layer links", sum(len(v) for v in snap.layers.values()))
        for name, links in snap.layers.items():
            for link in links:
                self.progress.advance()
                if link.name in snap.sizes:
                    continue
                repaired = False
                if repair:
                    with self.c.fences.claim([link], None) as held:
                        if held[0] and self.c.blobs.size(link.digest) is None:
                            self.c.fences.delete_claimed([link.key])
                            repaired = True
                findings.append(Finding("layer-link-dangling", name, link.name,
                                        "", repaired))
        return findings
