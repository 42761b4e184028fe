"""The index's state in Redis: tags, repositories, manifest metadata, referrers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from services.index.schema import Keys
from services.index.summaries import Summaries
from shared.events import CATALOG_SCOPE, repo_scope
from shared.redis_client import ReplicaAck
from shared.user_events import FIELD_EVENT, UserEventGroups

# Every script publishes the scopes it changed on the events channel (the
# last KEYS entry; see `shared.events`), in the same atomic step as the change,
# so that the caches of storage and the router drop what they derived from them.

# A write that reports a user event (`shared.user_events`) passes its JSON as
# the last ARGV and the stream as the last KEYS entry: the event is queued in
# the same atomic step as the change, or not at all.

# KEYS: repos, tags, tagmap, manifests, referrers, descriptions, search_version, events,
#       user events stream
# ARGV: repo, digest, tag or "", metadata, has_subject "1"/"0", set_description "1"/"0",
#       description, repo scope, catalog scope, user event JSON or ""
_PUT_MANIFEST = """
local new_repo = redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[5], ARGV[2])
end
local changed = new_repo
if ARGV[6] == '1' then
  local old = redis.call('HGET', KEYS[6], ARGV[1])
  if old ~= ARGV[7] then
    if ARGV[7] == '' then
      redis.call('HDEL', KEYS[6], ARGV[1])
    else
      redis.call('HSET', KEYS[6], ARGV[1], ARGV[7])
    end
    if old or ARGV[7] ~= '' then changed = 1 end
  end
end
redis.call('PUBLISH', KEYS[8], ARGV[8])
if changed == 1 then
  redis.call('INCR', KEYS[7])
  redis.call('PUBLISH', KEYS[8], ARGV[9])
end
if ARGV[10] ~= '' then redis.call('XADD', KEYS[9], '*', 'event', ARGV[10]) end
return new_repo
"""

# KEYS: tags, tagmap, events, user events stream   ARGV: tag, repo scope, user event or ""
_DELETE_TAG = """
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[2])
if ARGV[3] ~= '' then redis.call('XADD', KEYS[4], '*', 'event', ARGV[3]) end
return 1
"""

# KEYS: tags, tagmap, manifests, referrers-of-subject or tagmap again, events,
#       user events stream
# ARGV: digest, has_subject, repo scope, user event JSON or "", and the JSON of the
#       tag delete event each removed tag reports (as distribution does), with
#       __TAG__ for the tag and __ID__ for its id: a name-based UUID (SHA-1 of the
#       manifest delete event's JSON and the tag), unique and the same on a retry
_DELETE_MANIFEST = """
local pairs_ = redis.call('HGETALL', KEYS[2])
local removed = {}
for i = 1, #pairs_, 2 do
  if pairs_[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[2], pairs_[i])
    redis.call('ZREM', KEYS[1], pairs_[i])
    removed[#removed + 1] = pairs_[i]
  end
end
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[2] == '1' then redis.call('SREM', KEYS[4], ARGV[1]) end
redis.call('PUBLISH', KEYS[5], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[6], '*', 'event', ARGV[4])
  for _, tag in ipairs(removed) do
    local h = redis.sha1hex(ARGV[4] .. '\\n' .. tag)
    local variant = string.format('%x', tonumber(h:sub(17, 17), 16) % 4 + 8)
    local id = h:sub(1, 8) .. '-' .. h:sub(9, 12) .. '-5' .. h:sub(14, 16) .. '-' ..
               variant .. h:sub(18, 20) .. '-' .. h:sub(21, 32)
    local event = string.gsub(string.gsub(ARGV[5], '__TAG__', tag), '__ID__', id)
    redis.call('XADD', KEYS[6], '*', 'event', event)
  end
end
return #removed
"""

# KEYS: pushed, search_version, events   ARGV: repo, time, catalog scope
# A tagged push makes its repository the most recently pushed, which orders
# search results: the snapshots rebuild and cached answers are dropped.
_TOUCH_PUSHED = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
"""

# KEYS: tags, tagmap, events   ARGV: tag, digest it must still name, repo scope
# KEYS: tags, tagmap, events, user events stream
# ARGV: tag, digest it must still name, repo scope, user event JSON or ""
_DELETE_TAG_IF = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[3])
if ARGV[4] ~= '' then redis.call('XADD', KEYS[4], '*', 'event', ARGV[4]) end
return 1
"""

# KEYS: repos, manifests, tags, tagmap, tagtimes, descriptions, search_version, events
# ARGV: repo, repo scope, catalog scope
_FORGET_REPOSITORY = """
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('INCR', KEYS[7])
redis.call('PUBLISH', KEYS[8], ARGV[2])
redis.call('PUBLISH', KEYS[8], ARGV[3])
return 1
"""

DESCRIPTION_ANNOTATION = "org.opencontainers.image.description"
TITLE_ANNOTATION = "org.opencontainers.image.title"
MAX_DESCRIPTION_LENGTH = 2000
MAX_LABEL_TEXT = 2000


def search_entry(annotations: dict[str, str], labels: dict[str, str]) -> bytes:
    """A repository's value in ``search:descriptions``.

    The description and title are the manifest's annotations, else the config's
    labels of the same names (`services.storage.image_labels`); the other
    labels' values are searched too. With nothing but a description the value
    is that text, as it always was; otherwise a msgpack map {d, t, l}, whose
    first byte (0x80-0x8f) no UTF-8 text starts with (see `read_search_entry`).
    """
    description = (annotations.get(DESCRIPTION_ANNOTATION)
                   or labels.get(DESCRIPTION_ANNOTATION, ""))[:MAX_DESCRIPTION_LENGTH]
    title = (annotations.get(TITLE_ANNOTATION) or labels.get(TITLE_ANNOTATION, ""))[:256]
    others = "\t".join(v for k, v in sorted(labels.items())
                       if k not in (DESCRIPTION_ANNOTATION, TITLE_ANNOTATION))
    if not (title or others):
        return description.encode()
    return msgpack.packb({"d": description, "t": title, "l": others[:MAX_LABEL_TEXT]})


def read_search_entry(raw: bytes) -> tuple[str, str]:
    """(description, the rest of the searchable text) from a ``search:descriptions`` value."""
    if raw[:1] and 0x80 <= raw[0] <= 0x8F:
        try:
            entry = msgpack.unpackb(raw)
            return str(entry.get("d", "")), f"{entry.get('t', '')}\t{entry.get('l', '')}"
        except (ValueError, AttributeError, msgpack.UnpackException):
            pass
    return raw.decode(errors="replace"), ""


@dataclass(frozen=True)
class Page:
    items: list[str]
    more: bool


class IndexStore:
    """`ack`: every write runs in a pipeline that ends with the replicas' confirmation
    (`shared.redis_client.ReplicaAck`); a write is answered only once confirmed."""

    def __init__(self, client: redis.Redis, prefix: str, ack: ReplicaAck | None = None,
                 event_groups: tuple[str, ...] = ()) -> None:
        self.redis = client
        self._ack = ack or ReplicaAck()
        self.keys = Keys(prefix)
        # The webhook endpoints' consumer groups, made before this process's
        # first event so that none recorded from now on goes unread.
        self._groups = UserEventGroups(client, self.keys.user_events, event_groups)
        self._put = client.register_script(_PUT_MANIFEST)
        self._delete_tag = client.register_script(_DELETE_TAG)
        self._delete_manifest = client.register_script(_DELETE_MANIFEST)
        self._touch_pushed = client.register_script(_TOUCH_PUSHED)
        self._delete_tag_if = client.register_script(_DELETE_TAG_IF)
        self._forget_repository = client.register_script(_FORGET_REPOSITORY)
        self.summaries = Summaries(client, self.keys,
                                   lambda raw: read_search_entry(raw)[0])

    # -- writes (called by storage over msgpack RPC) -------------------------

    def put_manifest(self, **record: Any) -> dict[str, Any]:
        return {"ok": bool(self.put_manifests([record])["ok"])}

    def record_events(self, events: list[str]) -> dict[str, Any]:
        """Queue user events that report no index change: pulls and blob events."""
        self._groups.ensure()
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.keys.user_events, {FIELD_EVENT: event})
        self._ack.run(pipe)
        return {"ok": len(events)}

    def put_manifests(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Several manifests in one round trip, each still its own atomic script.

        Storage batches the records of concurrent pushes (see
        `services.storage.index_client`); Redis then runs them in one pass of
        its event loop, with one AOF fsync for all.
        """
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            self._queue_put(pipe, **record)
        self._ack.run(pipe)
        return {"ok": len(records)}

    def _queue_put(self, client: Any, repo: str, digest: str, tag: str | None,
                   media_type: str, size: int, artifact_type: str | None,
                   annotations: dict[str, str], subject: str | None,
                   refs: list[str], config_media_type: str | None = None,
                   labels: dict[str, str] | None = None, event: str | None = None,
                   blob_sizes: dict[str, int] | None = None,
                   platforms: list[str] | None = None, **newer: Any) -> None:
        # `newer`: fields a newer storage sends that this index does not know yet,
        # so storage may be upgraded before the index.
        k = self.keys
        blob_sizes = blob_sizes or {}
        if event:
            self._groups.ensure()
        meta = msgpack.packb({
            "media_type": media_type, "size": size, "artifact_type": artifact_type,
            "annotations": annotations or {}, "subject": subject, "refs": refs,
            "config_media_type": config_media_type,
            "content_size": size + sum(blob_sizes.values()), "platforms": platforms or [],
        })
        description = search_entry(annotations or {}, labels or {})
        self._put(
            keys=[k.repos, k.tags(repo), k.tagmap(repo), k.manifests(repo),
                  k.referrers(repo, subject or ""), k.descriptions, k.search_version,
                  k.events, k.user_events],
            args=[repo, digest, tag or "", meta, "1" if subject else "0",
                  "1" if tag else "0", description, repo_scope(repo), CATALOG_SCOPE,
                  event or ""],
            client=client,
        )
        if tag:
            self._touch_pushed(keys=[k.search_pushed, k.search_version, k.events],
                               args=[repo, repr(time.time()), CATALOG_SCOPE], client=client)
            # For retention's "older than" and "newest N"; beside the script, not
            # in it: a missing time only makes a tag look as old as its manifest.
            client.hset(k.tag_times(repo), tag, f"{time.time():.3f}")
        self.summaries.queue_record(client, repo, digest, tag, size, blob_sizes)

    def delete_tag(self, repo: str, tag: str, event: str | None = None) -> dict[str, Any]:
        k = self.keys
        if event:
            self._groups.ensure()
        pipe = self.redis.pipeline(transaction=False)
        self._delete_tag(keys=[k.tags(repo), k.tagmap(repo), k.events, k.user_events],
                         args=[tag, repo_scope(repo), event or ""], client=pipe)
        self.summaries.queue_forget_tag(pipe, repo, tag)
        deleted, *_ = self._ack.run(pipe)
        return {"deleted": bool(deleted)}

    def delete_manifest(self, repo: str, digest: str, event: str | None = None,
                        tag_event: str = "") -> dict[str, Any]:
        if event:
            self._groups.ensure()
        meta = self.manifest(repo, digest)
        subject = meta.get("subject") if meta else None
        pipe = self.redis.pipeline(transaction=False)
        self._queue_delete_manifest(pipe, repo, digest, subject, event, tag_event)
        removed, *_ = self._ack.run(pipe)
        return {"tags_removed": int(removed)}

    def delete_manifests(self, items: list[tuple[str, str, str | None]],
                         events: list[str | None] | None = None) -> None:
        """(repo, digest, subject) of each; one round trip, each its own atomic script.
        For the garbage collector, whose `events` (one user event JSON per item, or
        None) are recorded with the deletes, as a DELETE's are."""
        if events and any(events):
            self._groups.ensure()
        pipe = self.redis.pipeline(transaction=False)
        for (repo, digest, subject), event in zip(items, events or [None] * len(items),
                                                  strict=True):
            self._queue_delete_manifest(pipe, repo, digest, subject, event)
        self._ack.run(pipe)

    def _queue_delete_manifest(self, pipe: Any, repo: str, digest: str,
                               subject: str | None, event: str | None = None,
                               tag_event: str = "") -> None:
        k = self.keys
        self._delete_manifest(
            keys=[k.tags(repo), k.tagmap(repo), k.manifests(repo),
                  k.referrers(repo, subject) if subject else k.tagmap(repo), k.events,
                  k.user_events],
            args=[digest, "1" if subject else "0", repo_scope(repo), event or "", tag_event],
            client=pipe,
        )
        self.summaries.queue_forget(pipe, repo, digest)

    def delete_tag_if(self, repo: str, tag: str, digest: str,
                      event: str | None = None) -> bool:
        """Delete the tag only while it still names `digest`: a tag pushed again since
        a policy chose it is the new push's, and stays. `event` (user event JSON) is
        recorded only when the tag goes."""
        k = self.keys
        if event:
            self._groups.ensure()
        pipe = self.redis.pipeline(transaction=False)
        self._delete_tag_if(keys=[k.tags(repo), k.tagmap(repo), k.events, k.user_events],
                            args=[tag, digest, repo_scope(repo), event or ""], client=pipe)
        (deleted,) = self._ack.run(pipe)
        if deleted:
            # The summaries' push time of the tag; a push of the same tag in the
            # instant between would lose its time there (not the tag itself).
            pipe = self.redis.pipeline(transaction=False)
            self.summaries.queue_forget_tag(pipe, repo, tag)
            self._ack.run(pipe)
        return bool(deleted)

    def forget_repository(self, repo: str) -> dict[str, Any]:
        """Drop a repository left without manifests from the catalog; a repository that
        gained one meanwhile stays."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._forget_repository(
            keys=[k.repos, k.manifests(repo), k.tags(repo), k.tagmap(repo), k.tag_times(repo),
                  k.descriptions, k.search_version, k.events],
            args=[repo, repo_scope(repo), CATALOG_SCOPE], client=pipe)
        (forgotten,) = self._ack.run(pipe)
        return {"forgotten": bool(forgotten)}

    def repository_manifests(self, repo: str) -> dict[str, Any]:
        """The digests of the repository's manifests, for a repository delete."""
        return {"digests": sorted(d.decode() for d in self.redis.hkeys(self.keys.manifests(repo)))}

    def resolve_tag(self, repo: str, tag: str) -> dict[str, Any]:
        digest = self.redis.hget(self.keys.tagmap(repo), tag)
        if digest is not None:
            return {"digest": digest.decode()}
        if self.redis.zscore(self.keys.repos, repo) is None:
            return {"error": "NAME_UNKNOWN"}
        return {"error": "MANIFEST_UNKNOWN"}

    # -- reads ---------------------------------------------------------------

    def manifest(self, repo: str, digest: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.manifests(repo), digest)
        return msgpack.unpackb(raw) if raw is not None else None

    def repository_changed(self, repo: str) -> dict[str, Any]:
        """Publish the repository's scope for a change made outside Redis: storage
        unlinked a manifest's bytes after the index forgot it."""
        self.redis.publish(self.keys.events, repo_scope(repo))
        return {"ok": True}

    def repository_exists(self, repo: str) -> bool:
        return self.redis.zscore(self.keys.repos, repo) is not None

    @staticmethod
    def _queue_lex_page(pipe: Any, key: str, last: str, n: int) -> None:
        # One more than asked for tells whether another page follows.
        pipe.zrangebylex(key, f"({last}" if last else "-", "+", 0, n + 1)

    @staticmethod
    def _page(raw: list[bytes], n: int) -> Page:
        items = [v.decode() for v in raw]
        return Page(items[:n], len(items) > n)

    def tags(self, repo: str, last: str, n: int) -> Page | None:
        """A page of the repository's tags, or None when the repository is unknown."""
        if n == 0:
            return Page([], False) if self.repository_exists(repo) else None
        # One round trip: the existence check and the page together.
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(self.keys.repos, repo)
        self._queue_lex_page(pipe, self.keys.tags(repo), last, n)
        known, raw = pipe.execute()
        if known is None and not raw:
            return None
        return self._page(raw, n)

    def catalog(self, last: str, n: int) -> Page:
        if n == 0:
            return Page([], False)
        pipe = self.redis.pipeline(transaction=False)
        self._queue_lex_page(pipe, self.keys.repos, last, n)
        (raw,) = pipe.execute()
        return self._page(raw, n)

    def referrers(self, repo: str, subject: str) -> list[tuple[str, dict[str, Any]]]:
        digests = sorted(d.decode() for d in self.redis.smembers(self.keys.referrers(repo,
                                                                                     subject)))
        if not digests:
            return []
        metas = self.redis.hmget(self.keys.manifests(repo), digests)
        return [(d, msgpack.unpackb(m)) for d, m in zip(digests, metas, strict=True)
                if m is not None]

    def ping(self) -> bool:
        return bool(self.redis.ping())
