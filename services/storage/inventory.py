"""What storage holds, enumerated for the jobs that read all of it.

The collector, usage and fsck list blobs and links through these functions
and never build paths or keys themselves (`paths` is the one place that does).
A filesystem is walked directory by directory (pruning what need not be read:
finding repositories never lists their links); an object store's keys are
listed by prefix through the backend (`backends.base`), where the directory
layout is only in the keys' names.
A file that does not have the shape `paths` gives names (a stray temporary
link, a name that fails validation) is skipped, never reported as a blob.
Every listing is a walk of directories as they are at that moment: a file
created during the walk may or may not appear, which the collector's
barrier (`fences`) makes harmless.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from services.storage.backends.base import Backend
from services.storage.paths import Keys, Layout
from shared.validation import DIGEST_ALGORITHMS, Digest, is_valid_name

# A repository's own directories: a name component never starts with "_".
_OWN = ("_layers", "_manifests", "_uploads")

# parse_digest's rules, compiled once: a walk checks every file name.
_HEX = {algorithm: re.compile(f"[0-9a-f]{{{length}}}")
        for algorithm, length in DIGEST_ALGORITHMS.items()}


@dataclass(frozen=True, slots=True)
class FileInfo:
    digest: Digest
    size: int
    mtime_ns: int
    name: str     # the digest as text, "<algorithm>:<hex>"
    path: str     # where the backend has it: a file, or (object store) the key
    key: str      # its key (`paths.Keys`), the same on every backend


def _scan(path: os.PathLike[str] | str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _digest(algorithm: str, hexpart: str) -> Digest | None:
    pattern = _HEX.get(algorithm)
    if pattern is None or pattern.fullmatch(hexpart) is None:
        return None
    return Digest(algorithm, hexpart)


def blobs(layout: Layout, backend: Backend | None = None) -> Iterator[FileInfo]:
    """Every blob: ``blobs/<algorithm>/<two hex>/<hex>``; `backend` when it is no
    filesystem (the collector passes its blob store's)."""
    if backend is not None and backend.local_path(Keys.BLOBS) is None:
        return _listed_blobs(backend)
    return _walked_blobs(layout)


def _walked_blobs(layout: Layout) -> Iterator[FileInfo]:
    for algorithm in _scan(layout.blobs):
        for prefix in _scan(algorithm.path):
            for entry in _scan(prefix.path):
                digest = _digest(algorithm.name, entry.name)
                if digest is None or entry.name[:2] != prefix.name:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield FileInfo(digest, st.st_size, st.st_mtime_ns,
                               f"{algorithm.name}:{entry.name}", entry.path,
                               Keys.blob(digest))


def repositories(layout: Layout, backend: Backend | None = None,
                 under: str = "") -> list[str]:
    """Every repository with a directory of links or uploads, names nested or not;
    with `under`, only that name and the names below it."""
    if backend is not None and backend.local_path(Keys.REPOSITORIES) is None:
        return _listed_repositories(backend, under)
    found: list[str] = []
    root = str(layout.repositories)
    for directory, subdirs, _files in os.walk(os.path.join(root, under) if under else root):
        if any(d in _OWN for d in subdirs):
            name = os.path.relpath(directory, root)
            if is_valid_name(name):
                found.append(name)
        # A name component never starts with "_": those are a repository's own.
        subdirs[:] = [d for d in subdirs if not d.startswith("_")]
    return sorted(found)


def _links(directory: os.PathLike[str], prefix: str) -> Iterator[FileInfo]:
    for algorithm in _scan(directory):
        for entry in _scan(algorithm.path):
            digest = _digest(algorithm.name, entry.name)
            if digest is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield FileInfo(digest, st.st_size, st.st_mtime_ns, f"{algorithm.name}:{entry.name}",
                           entry.path, f"{prefix}{algorithm.name}/{entry.name}")


def layer_links(layout: Layout, name: str, backend: Backend | None = None
                ) -> Iterator[FileInfo]:
    if backend is not None and backend.local_path(Keys.REPOSITORIES) is None:
        return _listed_links(backend, Keys.layer_links(name))
    return _links(layout.repository(name) / "_layers", Keys.layer_links(name))


def manifest_links(layout: Layout, name: str, backend: Backend | None = None
                   ) -> Iterator[FileInfo]:
    if backend is not None and backend.local_path(Keys.REPOSITORIES) is None:
        return _listed_links(backend, Keys.manifest_links(name))
    return _links(layout.repository(name) / "_manifests", Keys.manifest_links(name))


# -- an object store: keys listed by prefix -------------------------------------------


def _listed_blobs(backend: Backend) -> Iterator[FileInfo]:
    for info in backend.list(Keys.BLOBS):
        parts = info.key[len(Keys.BLOBS):].split("/")
        if len(parts) != 3:
            continue
        algorithm, prefix, hexpart = parts
        digest = _digest(algorithm, hexpart)
        if digest is None or hexpart[:2] != prefix:
            continue
        yield FileInfo(digest, info.size, info.mtime_ns, f"{algorithm}:{hexpart}", info.key,
                       info.key)


def _listed_repositories(backend: Backend, under: str = "") -> list[str]:
    found = set()
    for info in backend.list(Keys.repository(under) if under else Keys.REPOSITORIES):
        rest = info.key[len(Keys.REPOSITORIES):]
        for own in _OWN:
            name, mark, _ = rest.partition(f"/{own}/")
            if mark and is_valid_name(name):
                found.add(name)
                break
    return sorted(found)


def _listed_links(backend: Backend, prefix: str) -> Iterator[FileInfo]:
    for info in backend.list(prefix):
        algorithm, _, hexpart = info.key[len(prefix):].partition("/")
        digest = _digest(algorithm, hexpart)
        if digest is not None:
            yield FileInfo(digest, info.size, info.mtime_ns, f"{algorithm}:{hexpart}",
                           info.key, info.key)
