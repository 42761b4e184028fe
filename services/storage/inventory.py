"""What the storage root holds, enumerated for the jobs that read all of it.

The collector, usage and fsck list blobs and links through these functions
and never build paths themselves (`paths` is the one place that does).
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

from services.storage.paths import Layout
from shared.validation import DIGEST_ALGORITHMS, Digest, is_valid_name

# parse_digest's rules, compiled once: a walk checks every file name.
_HEX = {algorithm: re.compile(f"[0-9a-f]{{{length}}}")
        for algorithm, length in DIGEST_ALGORITHMS.items()}


@dataclass(frozen=True, slots=True)
class FileInfo:
    digest: Digest
    size: int
    mtime_ns: int
    name: str     # the digest as text, "<algorithm>:<hex>"
    path: str


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


def blobs(layout: Layout) -> Iterator[FileInfo]:
    """Every blob: ``blobs/<algorithm>/<two hex>/<hex>``."""
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
                               f"{algorithm.name}:{entry.name}", entry.path)


def repositories(layout: Layout) -> list[str]:
    """Every repository with a directory of links or uploads, names nested or not."""
    found: list[str] = []
    root = str(layout.repositories)
    for directory, subdirs, _files in os.walk(root):
        if any(d in ("_layers", "_manifests", "_uploads") for d in subdirs):
            name = os.path.relpath(directory, root)
            if is_valid_name(name):
                found.append(name)
        # A name component never starts with "_": those are a repository's own.
        subdirs[:] = [d for d in subdirs if not d.startswith("_")]
    return sorted(found)


def _links(directory: os.PathLike[str]) -> Iterator[FileInfo]:
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
                           entry.path)


def layer_links(layout: Layout, name: str) -> Iterator[FileInfo]:
    return _links(layout.repository(name) / "_layers")


def manifest_links(layout: Layout, name: str) -> Iterator[FileInfo]:
    return _links(layout.repository(name) / "_manifests")
