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

# The reads are scripts too: one round trip, and one reply to parse, however
# many repositories or tags a page shows (a pipeline costs the client a
# command and a reply per key, which at 50 repositories was most of the page).
# KEYS: repos, descriptions, then each name's tags and summary   ARGV: the names
_REPOSITORIES = """
local out = {}
for i, name in ipairs(ARGV) do
  if redis.call('ZSCORE', KEYS[1], name) then
    local s = redis.call('HMGET', KEYS[2 * i + 2], 'size', 'pushed')
    out[#out + 1] = {name, redis.call('ZCARD', KEYS[2 * i + 1]), s[1], s[2],
                     redis.call('HGET', KEYS[2], name)}
  end
end
return out
"""

# KEYS: repos, tags, pushed, tagmap, manifests, summary, descriptions
# ARGV: repo, sort, offset, n
# -> known, total, size, pushed, description, covered, page, times, digests,
#    then digest, metadata pairs of the page's distinct manifests. `covered` is
#    0 when a push-time order was asked but the times do not cover every tag
#    (the caller sorts then); the page is empty.
_TAGS = """
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
local total = redis.call('ZCARD', KEYS[2])
local s = redis.call('HMGET', KEYS[6], 'size', 'pushed')
local head = {known, total, s[1], s[2], redis.call('HGET', KEYS[7], ARGV[1])}
local first = tonumber(ARGV[3])
local last = first + tonumber(ARGV[4]) - 1
local sort = ARGV[2]
local page, times = {}, {}
if last < first then
  -- n = 0: no tags (a range to first - 1 would read to the end)
elseif sort == 'name' or sort == '-name' then
  page = redis.call(sort == 'name' and 'ZRANGE' or 'ZREVRANGE', KEYS[2], first, last)
  for i, tag in ipairs(page) do times[i] = redis.call('ZSCORE', KEYS[3], tag) end
elseif redis.call('ZCARD', KEYS[3]) ~= total then
  head[6] = 0
  return head
else
  local raw = redis.call(sort == 'pushed' and 'ZREVRANGE' or 'ZRANGE', KEYS[3], first, last,
                         'WITHSCORES')
  for i = 1, #raw, 2 do
    page[#page + 1] = raw[i]
    times[#times + 1] = raw[i + 1]
  end
end
head[6] = 1
head[7], head[8] = page, times
head[9] = {}
if #page > 0 then head[9] = redis.call('HMGET', KEYS[4], unpack(page)) end
local seen = {}
for _, digest in ipairs(head[9]) do
  if digest and not seen[digest] then
    seen[digest] = true
    head[#head + 1] = digest
    head[#head + 1] = redis.call('HGET', KEYS[5], digest)
  end
end
return head
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
    repository: RepositorySummary  # read with the page, so a page needs no second read


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
        self._read_repositories = client.register_script(_REPOSITORIES)
        self._read_tags = client.register_script(_TAGS)

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
        if not names:
            return []
        k = self.keys
        keys = [k.repos, k.descriptions]
        for name in names:
            keys += [k.tags(name), k.summary(name)]
        return [self._summary(name.decode(), size, pushed, description, tags)
                for name, tags, size, pushed, description
                in self._read_repositories(keys=keys, args=names)]

    def _summary(self, name: str, size: bytes | None, pushed: bytes | None,
                 description: bytes | None, tags: int) -> RepositorySummary:
        return RepositorySummary(name, self._description(description) if description else "",
                                 int(tags), int(size or 0),
                                 int(pushed) / 1000 if pushed else None)

    def tags(self, repo: str, sort: str, offset: int, n: int) -> TagPage | None:
        """A page of the repository's tags in `sort` order, or None when it is unknown.

        Both orders are sorted sets (the tags by name, their push times by
        time), so a page costs the same at 10 or 10,000 tags: one script
        reads the page, its tags' digests and times, their manifests'
        records and the repository's summary. Should the push times not
        cover every tag (tags pushed before they were kept), the page is
        sorted from the whole tag map instead.
        """
        k = self.keys
        known, total, size, pushed_at, description, covered, *rest = self._read_tags(
            keys=[k.repos, k.tags(repo), k.pushed(repo), k.tagmap(repo), k.manifests(repo),
                  k.summary(repo), k.descriptions],
            args=[repo, sort, offset, n])
        if known is None and not total:
            return None
        if covered:
            page_raw, times, digests, *pairs = rest
            page = [t.decode() for t in page_raw]
            pushed = {t: float(ms) for t, ms in zip(page, times, strict=True) if ms is not None}
            metas = {pairs[i].decode(): msgpack.unpackb(pairs[i + 1])
                     for i in range(0, len(pairs), 2) if pairs[i + 1] is not None}
        else:
            page, pushed = self._sorted_by_time(repo, sort == "pushed", offset, n)
            digests = self.redis.hmget(k.tagmap(repo), page) if page else []
            metas = self._metas(repo, sorted({d.decode() for d in digests if d}))
        found = [(tag, d.decode()) for tag, d in zip(page, digests, strict=True) if d]
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
        return TagPage(int(total), out,
                       self._summary(repo, size, pushed_at, description, total))

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
