"""The Redis schema of the index. Every key the index uses is named here.

All keys start with the configured prefix (default ``dockyard:``).

=====================================  ======  =============================================
key                                    type    holds
=====================================  ======  =============================================
``repos``                              ZSET    every repository with a manifest; all scores
                                               0, so ZRANGEBYLEX pages the catalog in order
``repo:<name>:tags``                   ZSET    the repository's tags, scores 0 (lexical order)
``repo:<name>:tagmap``                 HASH    tag -> manifest digest
``repo:<name>:manifests``              HASH    manifest digest -> msgpack metadata:
                                               {media_type, size, artifact_type,
                                               annotations, subject, refs,
                                               config_media_type, content_size,
                                               platforms (each absent in records
                                               written before it was)}
``repo:<name>:referrers:<digest>``     SET     digests of the manifests whose ``subject``
                                               is <digest>
``repo:<name>:pushed``                 ZSET    tag, scored by when it last moved (unix ms)
``repo:<name>:summary``                HASH    ``size``: bytes of the manifests and their
                                               distinct blobs; ``pushed``: the latest
                                               manifest's time (unix ms)
``repo:<name>:counted``                HASH    manifest digest -> ``"<size> <blob> <size>
                                               ..."``: what it added to ``size``
``repo:<name>:blobrefs``               HASH    blob digest -> how many counted manifests
                                               reference it (`services.index.summaries`)
``search:descriptions``                HASH    repository -> what search finds besides the
                                               name, from its newest tagged manifest: the
                                               ``org.opencontainers.image.description``
                                               annotation, else that config label; plain
                                               text, or with a title or other labels a
                                               msgpack map (`store.search_entry`)
``search:pushed``                      ZSET    repository -> time of its last tagged push;
                                               orders search results within a rank
``search:version``                     STRING  counter bumped when a repository appears, a
                                               description changes or a tag is pushed; the
                                               search snapshots in the index processes
                                               rebuild when it moves
``events``                             PUBSUB  channel: the scope of each change,
                                               ``repo:<name>`` or ``catalog``; storage and
                                               the router drop what they cached of it
                                               (`shared.events`)
``notifications:events``               STREAM  user events for webhooks, one field
                                               ``event`` (distribution's JSON); added by
                                               the same script as the change it reports;
                                               one consumer group per endpoint
                                               (`shared.user_events`)
``notifications:dead:<endpoint>``      STREAM  events an endpoint never took in time
=====================================  ======  =============================================

Every change that touches more than one key runs as one Lua script, so a
reader never sees a tag without its manifest's metadata.
"""

from __future__ import annotations

from shared import events, user_events


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.repos = f"{prefix}repos"
        self.descriptions = f"{prefix}search:descriptions"
        self.search_version = f"{prefix}search:version"
        self.search_pushed = f"{prefix}search:pushed"
        self.events = events.channel(prefix)
        self.user_events = user_events.stream_key(prefix)

    def tags(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:tags"

    def tagmap(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:tagmap"

    def manifests(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:manifests"

    def pushed(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:pushed"

    def summary(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:summary"

    def counted(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:counted"

    def blobrefs(self, repo: str) -> str:
        return f"{self.prefix}repo:{repo}:blobrefs"

    def referrers(self, repo: str, subject: str) -> str:
        return f"{self.prefix}repo:{repo}:referrers:{subject}"
