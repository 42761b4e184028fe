"""Repository and tag summaries: the index's typed read model for browsing.

A registry UI lists repositories with their tag count, size and last push,
and a repository's tags with digest, size, platforms and push time. None of
that may cost a scan: a catalog holds 100,000 repositories and a repository
10,000 tags. So each push keeps running totals next to the index's own keys
(see `services.index.schema`), and a read touches only the page it shows.

Rules:

- **Size** of a repository is the bytes of its manifests plus the bytes of
  the distinct blobs they reference (config and layers, as their descriptors
  declare them), each blob counted once however many manifests share it. A
  reference count per blob keeps that exact across deletes.
- **Size** of a tag is what a pull of it transfers at most: the manifest, its
  config and layers; for an image index, itself plus each platform's image.
- **Push time** is the index's clock when the manifest was recorded; a tag's
  is when it last moved, the repository's is its latest manifest.
- The totals change in one Lua script per push or delete, keyed by manifest
  digest (``counted``), so a manifest pushed twice, or by two tags, is
  counted once, and a delete subtracts only what its push added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from services.index.schema import Keys

# KEYS: counted, blobrefs, summary, pushed
# ARGV: digest, tag or "", now (ms), "<manifest size> <blob> <size> ...", then blob, size pairs
_RECORD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4]) == 1 then
  local size = tonumber(string.match(ARGV[4], '^%S+'))
  for i = 5, #ARGV, 2 do
    if redis.call('HINCRBY', KEYS[2], ARGV[i], 1) == 1 then
      size = size + tonumber(ARGV[i + 1])
    end
  end
  redis.call('HINCRBY', KEYS[3], 'size', size)
end
redis.call('HSET', KEYS[3], 'pushed', ARGV[3])
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
return 1
"""

# Drops the push times of tags that no longer exist, checking each against the
# tag map in the same step, so a tag pushed again meanwhile keeps its time.
# KEYS: pushed, tagmap   ARGV: tags to check, or none to check every one
_FORGET_TAGS = """
local tags = ARGV
if #tags == 0 then tags = redis.call('ZRANGE', KEYS[1], 0, -1) end
local removed = 0
for _, tag in ipairs(tags) do
  if redis.call('HEXISTS', KEYS[2], tag) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], tag)
  end
end
return removed
"""

# KEYS: counted, blobrefs, summary   ARGV: digest
_FORGET = """
local counted = redis.call('HGET', KEYS[1], ARGV[1])
if not counted then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local words = {}
for w in string.gmatch(counted, '%S+') do words[#words + 1] = w end
local size = tonumber(words[1])
for i = 2, #words, 2 do
  if redis.call('HINCRBY', KEYS[2], words[i], -1) <= 0 then
    redis.call('HDEL', KEYS[2], words[i])
    size = size + tonumber(words[i + 1])
  end
end
redis.call('HINCRBY', KEYS[3], 'size', -size)
return 1
"""

INDEX_TYPES = frozenset({"application/vnd.oci.image.index.v1+json",
                         "application/vnd.docker.distribution.manifest.list.v2+json"})
SORTS = ("name", "-name", "pushed", "-pushed")


@dataclass(frozen=True)
class RepositorySummary:
    name: str
    description: str
    tags: int
    size: int
    pushed: float | None  # unix seconds


@dataclass(frozen=True)
class TagDetail:
    tag: str
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    platforms: list[str]
    pushed: float | None


@dataclass(frozen=True)
class TagPage:
    total: int
    tags: list[TagDetail]


class Summaries:
    """Keeps and reads the summaries; `IndexStore` calls the writes in its own pipelines."""

    def __init__(self, client: redis.Redis, keys: Keys,
                 description: Callable[[bytes], str]) -> None:
        """`description` reads a ``search:descriptions`` value (`store.read_search_entry`)."""
        self.redis = client
        self.keys = keys
        self._description = description
        self._record = client.register_script(_RECORD)
        self._forget = client.register_script(_FORGET)
        self._forget_tags = client.register_script(_FORGET_TAGS)

    # -- writes --------------------------------------------------------------

    def queue_record(self, client: Any, repo: str, digest: str, tag: str | None, size: int,
                     blob_sizes: dict[str, int]) -> None:
        k = self.keys
        counted = " ".join([str(size)] + [f"{d} {s}" for d, s in blob_sizes.items()])
        args: list[Any] = [digest, tag or "", int(time.time() * 1000), counted]
        for blob, blob_size in blob_sizes.items():
            args += [blob, blob_size]
        self._record(keys=[k.counted(repo), k.blobrefs(repo), k.summary(repo), k.pushed(repo)],
                     args=args, client=client)

    def queue_forget(self, client: Any, repo: str, digest: str) -> None:
        """After a manifest's delete: its bytes leave the size, its tags their times."""
        k = self.keys
        self._forget(keys=[k.counted(repo), k.blobrefs(repo), k.summary(repo)], args=[digest],
                     client=client)
        self._forget_tags(keys=[k.pushed(repo), k.tagmap(repo)], client=client)

    def queue_forget_tag(self, client: Any, repo: str, tag: str) -> None:
        """After a tag's delete."""
        self._forget_tags(keys=[self.keys.pushed(repo), self.keys.tagmap(repo)], args=[tag],
                          client=client)

    # -- reads ---------------------------------------------------------------

    def repositories(self, names: list[str]) -> list[RepositorySummary]:
        """The summaries of those of `names` that exist, in the order given; one round trip."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zscore(k.repos, name)
            pipe.zcard(k.tags(name))
            pipe.hmget(k.summary(name), "size", "pushed")
            pipe.hget(k.descriptions, name)
        raw = pipe.execute()
        out = []
        for i, name in enumerate(names):
            known, tags, (size, pushed), description = raw[4 * i:4 * i + 4]
            if known is None:
                continue
            out.append(RepositorySummary(
                name, self._description(description) if description else "", int(tags),
                int(size or 0), int(pushed) / 1000 if pushed else None))
        return out

    def tags(self, repo: str, sort: str, offset: int, n: int) -> TagPage | None:
        """A page of the repository's tags in `sort` order, or None when it is unknown.

        Both orders are sorted sets (the tags by name, their push times by
        time), so a page costs the same at 10 or 10,000 tags. Should the push
        times not cover every tag (tags pushed before they were kept), the
        page is sorted from the whole tag map instead.
        """
        k = self.keys
        newest_first = sort == "pushed"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(k.repos, repo)
        pipe.zcard(k.tags(repo))
        if sort.lstrip("-") == "name":
            getattr(pipe, "zrevrange" if sort == "-name" else "zrange")(
                k.tags(repo), offset, offset + n - 1)
        else:
            pipe.zcard(k.pushed(repo))
            getattr(pipe, "zrevrange" if newest_first else "zrange")(
                k.pushed(repo), offset, offset + n - 1, withscores=True)
        known, total, *rest = pipe.execute()
        if known is None and not total:
            return None
        if sort.lstrip("-") == "name":
            page = [t.decode() for t in rest[0]]
            pushed = dict(zip(page, self.redis.zmscore(k.pushed(repo), page) if page else [],
                              strict=True))
        elif rest[0] == total:
            page = [t.decode() for t, _ in rest[1]]
            pushed = {t.decode(): ms for t, ms in rest[1]}
        else:
            page, pushed = self._sorted_by_time(repo, newest_first, offset, n)
        digests = self.redis.hmget(k.tagmap(repo), page) if page else []
        found = [(tag, d.decode()) for tag, d in zip(page, digests, strict=True) if d]
        metas = self._metas(repo, sorted({d for _, d in found}))
        children = sorted({c for m in metas.values() if m.get("media_type") in INDEX_TYPES
                           for c in m.get("refs", [])} - metas.keys())
        metas.update(self._metas(repo, children))
        out = []
        for tag, digest in found:
            meta = metas.get(digest, {})
            ms = pushed.get(tag)
            out.append(TagDetail(tag, digest, meta.get("media_type", ""),
                                 meta.get("artifact_type"), _total_size(meta, metas),
                                 list(meta.get("platforms") or []),
                                 ms / 1000 if ms is not None else None))
        return TagPage(int(total), out)

    def _sorted_by_time(self, repo: str, newest_first: bool, offset: int,
                        n: int) -> tuple[list[str], dict[str, float]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hkeys(self.keys.tagmap(repo))
        pipe.zrange(self.keys.pushed(repo), 0, -1, withscores=True)
        names, times = pipe.execute()
        pushed = {t.decode(): ms for t, ms in times}
        tags = sorted((t.decode() for t in names), key=lambda t: (pushed.get(t, 0.0), t),
                      reverse=newest_first)
        return tags[offset:offset + n], pushed

    def _metas(self, repo: str, digests: list[str]) -> dict[str, dict[str, Any]]:
        if not digests:
            return {}
        raw = self.redis.hmget(self.keys.manifests(repo), digests)
        return {d: msgpack.unpackb(m) for d, m in zip(digests, raw, strict=True)
                if m is not None}


def _own_size(meta: dict[str, Any]) -> int:
    return int(meta.get("content_size", meta.get("size", 0)))


def _total_size(meta: dict[str, Any], metas: dict[str, dict[str, Any]]) -> int:
    if meta.get("media_type") not in INDEX_TYPES:
        return _own_size(meta)
    return _own_size(meta) + sum(_own_size(metas.get(c, {})) for c in meta.get("refs", []))
