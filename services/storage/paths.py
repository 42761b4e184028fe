"""The on-disk layout of the storage root. This module is the only one that builds paths.

::

    <root>/
    ├── blobs/                                   content-addressed bytes, shared by all repos
    │   └── <algorithm>/<first two hex>/<hex>    one file per blob or manifest, never rewritten
    ├── repositories/
    │   └── <name>/                              a name may nest: library/ubuntu
    │       ├── _layers/<algorithm>/<hex>        empty link file: the repo may serve this blob
    │       ├── _manifests/<algorithm>/<hex>     symlink whose target is the manifest's media
    │       │                                    type (a name, never followed)
    │       └── _uploads/<upload id>             empty marker, counts the repo's open uploads
    ├── locks/<00..ff>                           lock files: a manifest's PUT and DELETE
    │                                            hold the one its repo and digest hash to
    ├── locks/blob-<00..ff>                      a blob's stripe: writers that touch the blob
    │                                            or a link to it share it, the collector's
    │                                            delete takes it alone (`fences`)
    ├── locks/gc-gate, locks/gc-commit           the collector's barrier (`fences`)
    ├── locks/gc-run                             held by the one running collection
    ├── gc/                                      the collector's state: the mark file whose
    │                                            mtime is a run's start, the last run's
    │                                            summary, the usage cache
    ├── uploads/
    │   └── <upload id>/                         one upload session
    │       ├── data                             the bytes received so far, appended in order
    │       └── info                             msgpack {repo, started}
    └── tmp/                                     partial files, renamed into place when complete
        ├── fetch-<algorithm>-<hex>              a blob being fetched from an upstream
        └── fetch-<algorithm>-<hex>.size         its length, for the readers that follow it

Every path component comes from `shared.validation`: names match the spec's
grammar (no ``..``, no leading ``_``, so ``_layers`` can never be a name
component), digests are ``<algorithm>:<lowercase hex>`` of a known algorithm,
upload ids are 32 lowercase hex characters. Nothing else reaches this module.

A file becomes visible under ``blobs/`` only by ``rename`` from ``tmp/`` or
``uploads/`` after it was fsynced and its digest verified, so a crash leaves
either no blob or a whole one. Both directories must be on one filesystem.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.validation import Digest


class Layout:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.blobs = self.root / "blobs"
        self.repositories = self.root / "repositories"
        self.uploads = self.root / "uploads"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.gc = self.root / "gc"

    def create(self) -> None:
        for d in (self.blobs, self.repositories, self.uploads, self.tmp, self.locks, self.gc):
            d.mkdir(parents=True, exist_ok=True)

    def blob(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def repository(self, name: str) -> Path:
        return self.repositories / name

    def layer_link(self, name: str, digest: Digest) -> Path:
        return self.repositories / name / "_layers" / digest.algorithm / digest.hex

    def manifest_link(self, name: str, digest: Digest) -> Path:
        return self.repositories / name / "_manifests" / digest.algorithm / digest.hex

    def manifest_lock(self, name: str, digest: Digest) -> Path:
        stripe = hashlib.sha256(f"{name}@{digest}".encode()).hexdigest()[:2]
        return self.locks / stripe

    def blob_lock(self, digest: Digest) -> Path:
        # The hex is a hash already: its first two characters spread evenly.
        return self.locks / f"blob-{digest.hex[:2]}"

    def gc_lock(self, name: str) -> Path:
        """`gate`, `commit` or `run`: the collector's locks (see `fences`)."""
        return self.locks / f"gc-{name}"

    def gc_file(self, name: str) -> Path:
        return self.gc / name

    def upload_marker(self, name: str, upload_id: str) -> Path:
        return self.repositories / name / "_uploads" / upload_id

    def upload_markers(self, name: str) -> Path:
        return self.repositories / name / "_uploads"

    def upload_dir(self, upload_id: str) -> Path:
        return self.uploads / upload_id

    def upload_data(self, upload_id: str) -> Path:
        return self.uploads / upload_id / "data"

    def upload_info(self, upload_id: str) -> Path:
        return self.uploads / upload_id / "info"

    def proxy_fetch(self, digest: Digest) -> Path:
        """The file an upstream blob is written into, while readers follow it."""
        return self.tmp / f"fetch-{digest.algorithm}-{digest.hex}"

    def proxy_fetch_size(self, digest: Digest) -> Path:
        return self.tmp / f"fetch-{digest.algorithm}-{digest.hex}.size"
