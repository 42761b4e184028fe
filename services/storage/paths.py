"""The layout of what storage keeps. This module is the only one that builds names.

`Keys` names every object as a backend-independent key, a relative path with
``/`` separators; a backend (`services.storage.backends`) stores the object
under it: the filesystem backend as the file ``<root>/<key>``, the S3 backend
as the object ``<prefix><key>`` of its bucket. `Layout` is the filesystem's
view, the same keys joined to the root, for the jobs that work on files
(the collector, fsck, the pull-through cache) and for the per-replica local
scratch (``tmp/``) that every backend has.

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
On S3 the same keys hold the same things; what differs (manifest links as
objects whose body is the media type, upload sessions as multipart uploads,
lease objects under ``locks/``) is described in `backends.s3`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.validation import Digest


class Keys:
    """Every object's key: relative, ``/``-separated, the same on every backend."""

    BLOBS = "blobs/"
    REPOSITORIES = "repositories/"
    UPLOADS = "uploads/"

    @staticmethod
    def blob(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    @staticmethod
    def repository(name: str) -> str:
        return f"repositories/{name}/"

    @staticmethod
    def layer_link(name: str, digest: Digest) -> str:
        return f"repositories/{name}/_layers/{digest.algorithm}/{digest.hex}"

    @staticmethod
    def manifest_link(name: str, digest: Digest) -> str:
        return f"repositories/{name}/_manifests/{digest.algorithm}/{digest.hex}"

    @staticmethod
    def layer_links(name: str) -> str:
        return f"repositories/{name}/_layers/"

    @staticmethod
    def manifest_links(name: str) -> str:
        return f"repositories/{name}/_manifests/"

    @staticmethod
    def upload_marker(name: str, upload_id: str) -> str:
        return f"repositories/{name}/_uploads/{upload_id}"

    @staticmethod
    def upload_markers(name: str) -> str:
        return f"repositories/{name}/_uploads/"

    @staticmethod
    def upload(upload_id: str, part: str = "") -> str:
        """A session's directory (``uploads/<id>/``), or one object in it."""
        return f"uploads/{upload_id}/{part}"

    @staticmethod
    def collectable(key: str) -> bool:
        """Whether the collector may delete `key`: a blob, a layer or manifest link."""
        return key.startswith("blobs/") or (
            key.startswith("repositories/") and ("/_layers/" in key or "/_manifests/" in key))

    @staticmethod
    def manifest_lock(name: str, digest: Digest) -> str:
        stripe = hashlib.sha256(f"{name}@{digest}".encode()).hexdigest()[:2]
        return f"locks/{stripe}"

    @staticmethod
    def blob_lock(digest: Digest) -> str:
        # The hex is a hash already: its first two characters spread evenly.
        return f"locks/blob-{digest.hex[:2]}"

    @staticmethod
    def upload_lock(upload_id: str) -> str:
        return f"locks/upload-{upload_id}"


class Layout:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.blobs = self.root / "blobs"
        self.repositories = self.root / "repositories"
        self.uploads = self.root / "uploads"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.gc = self.root / "gc"

    def path(self, key: str) -> Path:
        """The file of `key` (see `Keys`)."""
        return self.root / key

    def create(self, *, scratch_only: bool = False) -> None:
        """The directories; with an object store, only the replica's own scratch
        (``tmp/``) and the cached answers of ``gc/`` (usage)."""
        dirs = (self.tmp, self.gc) if scratch_only else (
            self.blobs, self.repositories, self.uploads, self.tmp, self.locks, self.gc)
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)

    def blob(self, digest: Digest) -> Path:
        return self.root / Keys.blob(digest)

    def repository(self, name: str) -> Path:
        return self.repositories / name

    def layer_link(self, name: str, digest: Digest) -> Path:
        return self.root / Keys.layer_link(name, digest)

    def manifest_link(self, name: str, digest: Digest) -> Path:
        return self.root / Keys.manifest_link(name, digest)

    def manifest_lock(self, name: str, digest: Digest) -> Path:
        return self.root / Keys.manifest_lock(name, digest)

    def blob_lock(self, digest: Digest) -> Path:
        return self.root / Keys.blob_lock(digest)

    def gc_lock(self, name: str) -> Path:
        """`gate`, `commit` or `run`: the collector's locks (see `fences`)."""
        return self.locks / f"gc-{name}"

    def gc_file(self, name: str) -> Path:
        return self.gc / name

    def upload_marker(self, name: str, upload_id: str) -> Path:
        return self.root / Keys.upload_marker(name, upload_id)

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
