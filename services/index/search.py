"""Substring search over repository names and descriptions.

Redis has no substring index, and scanning 100,000 names per query in Python
is too slow, so each index process keeps a snapshot: every repository as one
lowercased line ``name<TAB>description``, in name order, grouped into blocks
of about `BLOCK_LINES` lines, each block one string. A query is a run of
``str.find`` calls (C speed) over the blocks that may hold it.

Which blocks may: each block carries a 4,096-bit filter of the trigrams in
its text. A block lacking one of the query's trigrams cannot contain it, so
a query for one repository's full name scans one or two blocks instead of
the whole catalog. That matters beyond its own cost: ``str.find`` holds the
GIL, and a full scan of 100,000 repositories (1.6 ms on the CI machine)
stalled every other request of the process meanwhile.

Block boundaries are chosen by a hash of the name that ends a block, not by
position, so a new repository changes only the block it lands in; a rebuild
reuses the filters of unchanged blocks. (Name order also keeps the filters
selective: neighbouring names share most of their trigrams.)

A line holds what a repository is found by: its name, its description, and
its title and other config labels (`services.index.store.search_entry`).
Matching is case-insensitive; a query of several words finds the
repositories whose line holds every word, found by scanning for the longest
word and checking the others in each line it hits. Results are ranked:

1. the exact repository name;
2. a last path component equal to the query;
3. a name that starts with the query;
4. a name that contains it (for several words: all of them);
5. a match in the description, title or labels;

and within each rank the most recently pushed first (``search:pushed``).
Ranking splits the matches into ranks by stable passes, and puts a rank in
recency order (by a place computed once per snapshot) only as far as the page
asked for reaches into it. An empty query lists every
repository in name order. The ranked matches of a query are cached with the
snapshot, so a repeated query costs a slice.

The snapshot is rebuilt when ``search:version`` in Redis moves: at once for
catalogs under `EAGER_LIMIT` repositories, and at most every `refresh`
seconds for larger ones, so on a big busy registry a new repository may take
that long to show up in search.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.index.store import IndexStore, read_search_entry
from shared.events import CATALOG_SCOPE

EAGER_LIMIT = 10_000
# More distinct words than this in one query is refused: each one costs a check
# of every line the longest word hits.
MAX_QUERY_WORDS = 10
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25
BLOCK_LINES = 256
FILTER_BITS = 4096


def _trigram_bits(text: str) -> set[int]:
    return {hash(text[i:i + 3]) % FILTER_BITS for i in range(len(text) - 2)}


def _filter(text: str) -> int:
    bits = bytearray(FILTER_BITS // 8)
    for b in _trigram_bits(text):
        bits[b >> 3] |= 1 << (b & 7)
    return int.from_bytes(bits, "little")


@dataclass(frozen=True)
class _Block:
    first: int  # index of its first line in the snapshot
    text: str  # its lines, each ending in "\n"
    starts: list[int]  # offset of each line in text
    trigrams: int  # the filter: bit (hash(trigram) % FILTER_BITS) set for each


def _blocks(lines: list[str], names: list[str],
            previous: dict[str, int]) -> list[_Block]:
    """Group lines into blocks, ending one where a name's hash says so (or at
    4 * BLOCK_LINES), and take each filter from `previous` when the text is unchanged."""
    blocks: list[_Block] = []
    start = 0
    for i, name in enumerate(names):
        last = i == len(names) - 1
        if not (last or hash(name) % BLOCK_LINES == 0 or i + 1 - start >= 4 * BLOCK_LINES):
            continue
        chunk = lines[start:i + 1]
        text = "\n".join(chunk) + "\n"
        starts, pos = [], 0
        for line in chunk:
            starts.append(pos)
            pos += len(line) + 1
        trigrams = previous.get(text)
        if trigrams is None:
            trigrams = _filter(text)
        blocks.append(_Block(start, text, starts, trigrams))
        start = i + 1
    return blocks


# Distinct queries whose matches each snapshot remembers: a registry's
# searches repeat, and a common word can match thousands of repositories.
QUERY_CACHE_SIZE = 512


class QueryInvalid(ValueError):
    """A query search refuses, with the reason for the client."""


def query_words(query: str) -> tuple[str, ...]:
    """The distinct lowercased words of `query`, longest first, without those another
    word contains (a line holding "nginx" holds "gin"). Raises QueryInvalid."""
    words = _clean(query).lower().split()
    if len(words) <= 1:
        return tuple(words)
    words = sorted(set(words), key=lambda w: (-len(w), w))
    kept: list[str] = []
    for word in words:
        if not any(word in longer for longer in kept):
            kept.append(word)
    if len(kept) > MAX_QUERY_WORDS:
        raise QueryInvalid(f"a search query may have at most {MAX_QUERY_WORDS} words")
    return tuple(kept)


@dataclass
class _Snapshot:
    version: int = -1
    names: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    built_at: float = 0.0
    # The names lowercased, as the lines hold them (the same strings when they are).
    lower_names: list[str] = field(default_factory=list)
    # Each line's place when the lines are ordered most recently pushed first.
    recency: Sequence[int] = field(default_factory=list)
    cache: OrderedDict[tuple[str, ...], _Ranked] = field(default_factory=OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)

    def matches(self, q: str, others: tuple[str, ...] = ()) -> list[int]:
        """Indexes of the lines that contain `q` and every word of `others`, in line order."""
        return self._scan(q, others, split=False)[0]

    def _scan(self, q: str, others: tuple[str, ...],
              split: bool) -> tuple[list[int], list[int], list[int], list[int]]:
        """The lines holding `q` and every word of `others`, in line order. With
        `split`, apart by where `q` is first found: (name equal to it, name starting
        with it, elsewhere in the name, after the name); without, all in the first."""
        found: list[int] = []
        exact, prefix, in_name, elsewhere = ([], [], [], []) if split else (found,) * 4
        wanted = _filter(q) if len(q) >= 3 else 0
        for word in others:
            if len(word) >= 3:
                wanted |= _filter(word)
        after = len(q)
        for block in self.blocks:
            if block.trigrams & wanted != wanted:
                continue
            text, starts = block.text, block.starts
            pos = text.find(q)
            while pos != -1:
                line = bisect.bisect_right(starts, pos) - 1
                start = starts[line]
                end = starts[line + 1] if line + 1 < len(starts) else len(text)
                if not split:
                    if not others or all(w in text[start:end] for w in others):
                        found.append(block.first + line)
                # `pos` is the first hit in its line; the name ends at the first tab.
                elif pos == start:
                    (exact if text[pos + after] == "\t" else prefix).append(block.first + line)
                else:
                    in_name.append(block.first + line)  # or after the name: see below
                if end >= len(text):
                    break
                pos = text.find(q, end)
        if split and in_name:
            # One pass over the names beats finding each line's tab.
            names = self.lower_names if len(self.lower_names) == len(self.names) else [
                n.lower() for n in self.names]
            hits, in_name = in_name, [i for i in in_name if q in names[i]]
            if len(in_name) < len(hits):
                elsewhere = [i for i in hits if q not in names[i]]
        return exact, prefix, in_name, elsewhere

    def ranked(self, words: tuple[str, ...]) -> _Ranked:
        """The lines that hold every word, by rank (see the module docstring)."""
        with self.cache_lock:
            found = self.cache.get(words)
            if found is not None:
                self.cache.move_to_end(words)
                return found
        if not words:
            found = _Ranked([list(range(len(self.names)))], by_name=True)
        else:
            found = _Ranked(self._parts(words))
        with self.cache_lock:
            self.cache[words] = found
            if len(self.cache) > QUERY_CACHE_SIZE:
                self.cache.popitem(last=False)
        return found

    def _parts(self, words: tuple[str, ...]) -> list[list[int]]:
        """The lines that hold every word, split into ranks, best first, each in line
        order: one scan sorts them by where the query is found in the line."""
        names = self.lower_names if len(self.lower_names) == len(self.names) else [
            n.lower() for n in self.names]
        q = words[0]
        if len(words) > 1:
            hits = self.matches(q, words[1:])
            in_name = [i for i in hits if all(w in names[i] for w in words)]
            return [in_name, _without(hits, in_name)]
        exact, prefix, in_name, elsewhere = self._scan(q, (), split=True)
        # A last path component equal to q: few name hits are checked one by one,
        # many found by a scan for "/q<TAB>" (a tab also separates a description
        # from the title and labels, hence the check of what it finds).
        if "/" in q:  # no path component holds a "/"
            candidates: list[int] = []
        elif len(prefix) + len(in_name) <= 64:
            candidates = prefix + in_name
        else:
            candidates = self._scan(f"/{q}\t", (), split=False)[0]
        last = sorted(i for i in candidates if names[i].endswith("/" + q))
        return [exact, last, _without(prefix, last), _without(in_name, last), elsewhere]

    def newest_first(self, part: list[int], count: int) -> list[int]:
        """The first `count` lines of `part` (or all), most recently pushed first."""
        if len(self.recency) != len(self.names):
            return part[:count]
        recency = self.recency
        if count * 4 >= len(part) or len(part) <= 256:
            return sorted(part, key=recency.__getitem__)
        # The lines among the newest `limit` of the snapshot, a limit that would hold
        # about 2 * count of them were the part spread evenly; raised until it holds
        # count. What it holds, in order, is a true start of the whole order.
        limit = 2 * count * len(recency) // len(part)
        while True:
            chosen = [i for i in part if recency[i] < limit]
            if len(chosen) >= count or limit >= len(recency):
                return sorted(chosen, key=recency.__getitem__)
            limit *= 4


class _Ranked:
    """A query's matches by rank. Each rank is put in recency order only as far as a
    page asks: page 1 of 10,000 matches costs a partial selection, not a sort."""

    def __init__(self, parts: list[list[int]], by_name: bool = False) -> None:
        self.parts = [p for p in parts if p]
        self.total = sum(len(p) for p in self.parts)
        # Part index -> its first lines in recency order (all of them when as long).
        self._ordered: dict[int, list[int]] = {}
        self._by_name = by_name

    def page(self, snap: _Snapshot, first: int, count: int) -> list[int]:
        out: list[int] = []
        pos = 0
        for n, part in enumerate(self.parts):
            end = first + count - pos  # how far into this part the page reaches
            if end <= 0:
                break
            if first < pos + len(part):
                if self._by_name:
                    ordered = part
                else:
                    ordered = self._ordered.get(n, [])
                    if len(ordered) < min(end, len(part)):
                        # Racing threads compute the same list; either may stay.
                        ordered = snap.newest_first(part, max(end, 2 * len(ordered)))
                        self._ordered[n] = ordered
                out.extend(ordered[max(0, first - pos):end])
            pos += len(part)
        return out


def _without(items: list[int], drop: list[int]) -> list[int]:
    """`items` in order, less those in `drop`."""
    if not drop:
        return items
    gone = set(drop) if len(drop) > 8 else drop
    return [i for i in items if i not in gone]


def _clean(s: str) -> str:
    return s.replace("\t", " ").replace("\n", " ").replace("\r", " ")


@dataclass(frozen=True)
class SearchResult:
    total: int
    page: int
    page_size: int
    results: list[tuple[str, str]]
    # False when answered from a snapshot older than the catalog, which a
    # cache must not keep: no later event would tell it to drop the answer.
    current: bool = True


class SearchIndex:
    def __init__(self, store: IndexStore, refresh: float) -> None:
        self._store = store
        self._refresh = refresh
        self._snapshot = _Snapshot()
        self._rebuild_lock = threading.Lock()
        # While subscribed to the index's events, a catalog event (published with
        # every bump of search:version) is what says the snapshot may be behind;
        # without one since the last check, a query skips asking Redis.
        self._events_live = False
        self._changes = 0
        self._verified_at = -1

    def events_state(self, live: bool) -> None:
        self._events_live = live
        self._changes += 1

    def changed(self, scope: str) -> None:
        if scope == CATALOG_SCOPE:
            self._changes += 1

    def _current(self) -> tuple[_Snapshot, int]:
        """The snapshot to answer from, and the version in Redis right now."""
        changes = self._changes
        snap = self._snapshot
        if self._events_live and changes == self._verified_at:
            return snap, snap.version
        current = self._current_from_redis()
        if current[0].version >= current[1]:
            self._verified_at = changes
        return current

    def _current_from_redis(self) -> tuple[_Snapshot, int]:
        raw = self._store.redis.get(self._store.keys.search_version)
        version = int(raw or 0)
        snap = self._snapshot
        if snap.version == version:
            return snap, version
        eager = len(snap.names) < EAGER_LIMIT or snap.version < 0
        if not eager and time.monotonic() - snap.built_at < self._refresh:
            return snap, version
        # One thread rebuilds; the others answer from the previous snapshot.
        if not self._rebuild_lock.acquire(blocking=eager):
            return snap, version
        try:
            if self._snapshot.version != version:
                self._snapshot = self._build()
            return self._snapshot, version
        finally:
            self._rebuild_lock.release()

    def _build(self) -> _Snapshot:
        r = self._store.redis
        keys = self._store.keys
        pipe = r.pipeline(transaction=True)
        pipe.get(keys.search_version)
        pipe.zrange(keys.repos, 0, -1)
        pipe.hgetall(keys.descriptions)
        pipe.zrange(keys.search_pushed, 0, -1, withscores=True)
        raw_version, raw_names, raw_desc, raw_pushed = pipe.execute()
        names = [n.decode() for n in raw_names]
        pushed_at = {k.decode(): t for k, t in raw_pushed}
        by_recency = sorted(range(len(names)), key=lambda i: -pushed_at.get(names[i], 0.0))
        recency = array("q", bytes(8 * len(names)))  # 8 bytes a line, not a list of ints
        for place, i in enumerate(by_recency):
            recency[i] = place
        entries = {k.decode(): read_search_entry(v) for k, v in raw_desc.items()}
        descriptions, lines = [], []
        for n in names:
            description, rest = entries.get(n, ("", ""))
            descriptions.append(description)
            line = f"{n}\t{_clean(description)}\t{_clean(rest)}" if rest else (
                f"{n}\t{_clean(description)}")
            lines.append(line.lower())
        previous = {b.text: b.trigrams for b in self._snapshot.blocks}
        return _Snapshot(version=int(raw_version or 0), names=names, descriptions=descriptions,
                         blocks=_blocks(lines, names, previous), built_at=time.monotonic(),
                         lower_names=[n if n.islower() else n.lower() for n in names],
                         recency=recency)

    def search(self, query: str, page: int, page_size: int) -> SearchResult:
        """One page of the ranked matches of `query`; raises QueryInvalid."""
        words = query_words(query)
        snap, version = self._current()
        matches = snap.ranked(words)
        first = (page - 1) * page_size
        chosen = matches.page(snap, first, page_size)
        return SearchResult(
            total=matches.total, page=page, page_size=page_size,
            results=[(snap.names[i], snap.descriptions[i]) for i in chosen],
            current=snap.version >= version,
        )
