"""A typed read interface on the index, for the jobs that read all of it.

The garbage collector, usage, fsck and retention read the index's Redis
(see `schema`) through `IndexReader` and get dataclasses back, never raw
hashes or msgpack maps. Readers see each repository as of one moment
(its keys are read in one pipeline, so a tag is never without its manifest),
but different repositories at different moments: a job that needs more
than that (the collector) brings its own barrier.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack
import redis

from services.index.schema import Keys


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    # Every digest the manifest names: config and layers, or an index's children.
    refs: tuple[str, ...]
    subject: str | None = None
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryState:
    name: str
    tags: dict[str, str] = field(default_factory=dict)            # tag -> digest
    manifests: dict[str, ManifestRecord] = field(default_factory=dict)
    tag_times: dict[str, float] = field(default_factory=dict)     # tag -> unix time


def _record(digest: str, raw: bytes) -> ManifestRecord:
    meta = msgpack.unpackb(raw)
    return ManifestRecord(digest=digest, media_type=meta.get("media_type") or "",
                          size=int(meta.get("size") or 0),
                          refs=tuple(meta.get("refs") or ()), subject=meta.get("subject"),
                          artifact_type=meta.get("artifact_type"))


class IndexReader:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def repositories(self) -> list[str]:
        return [r.decode() for r in self.redis.zrange(self.keys.repos, 0, -1)]

    def repository(self, name: str) -> RepositoryState:
        return next(self._states([name]))

    def repository_states(self, batch: int = 64) -> Iterator[RepositoryState]:
        """Every repository in the catalog, a pipeline of `batch` at a time."""
        names = self.repositories()
        for i in range(0, len(names), batch):
            yield from self._states(names[i:i + batch])

    def _states(self, names: list[str]) -> Iterator[RepositoryState]:
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        for name in names:
            pipe.hgetall(k.tagmap(name))
            pipe.hgetall(k.manifests(name))
            pipe.hgetall(k.tag_times(name))
        results = pipe.execute()
        for i, name in enumerate(names):
            tagmap, manifests, times = results[3 * i:3 * i + 3]
            tags = {t.decode(): d.decode() for t, d in tagmap.items()}
            yield RepositoryState(
                name=name, tags=tags,
                manifests={d.decode(): _record(d.decode(), raw) for d, raw in manifests.items()},
                tag_times={t.decode(): float(v) for t, v in times.items()
                           if t.decode() in tags},
            )
