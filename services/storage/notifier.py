"""Storage's side of webhooks: the user event of each request that makes one.

Storage is where the request is, so it builds the whole event
(`shared.user_events.Event`): target, request record, actor and source. How
the event reaches the queue depends on what it reports:

- an index change (manifest push, manifest delete, tag delete): its JSON
  rides along in the index call that makes the change, which queues it in the
  same Lua script (`attach`). The request is acknowledged only once both are.
- anything else (pulls, blob push, mount and delete, each on only when
  configured): `record` hands it to the index's ``record_events`` call, in
  group commits, before the response goes out. Should the index be down, the
  request still succeeds (a pull does not fail for want of a webhook): the
  event is then logged in full at WARNING and counted in
  ``dockyard_notifications_unrecorded_total``.

The actor is the identity the router authenticated, passed percent-encoded in
`shared.auth.identity.IDENTITY_HEADER` (absent or empty: anonymous,
``"actor": {}``). The request record comes from
the headers the router forwards: X-Request-Id, X-Forwarded-For (its last
entry is the address the router saw, the one part a client cannot forge),
X-Forwarded-Host and User-Agent.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

import falcon

from services.storage.index_client import IndexClient
from shared import errors
from shared.auth.identity import IDENTITY_HEADER
from shared.observability import Metrics
from shared.urls import external_url
from shared.user_events import (
    BLOB_MEDIA_TYPE,
    DELETE,
    MOUNT,
    PULL,
    PUSH,
    Event,
    RequestRecord,
    Source,
    Target,
)

log = logging.getLogger("dockyard.storage.notifier")


def request_record(req: falcon.Request) -> RequestRecord:
    forwarded = req.get_header("X-Forwarded-For") or ""
    addr = forwarded.split(",")[-1].strip() if forwarded else (req.remote_addr or "")
    host = (req.get_header("X-Forwarded-Host") or req.get_header("Host") or "")
    return RequestRecord(
        id=req.get_header("X-Request-Id") or "",
        method=req.method,
        useragent=req.get_header("User-Agent") or "",
        addr=addr,
        host=host.split(",")[0].strip(),
    )


class Notifier:
    def __init__(self, config: dict[str, Any], index: IndexClient,
                 metrics: Metrics | None = None) -> None:
        cfg = config["notifications"]
        self.enabled = bool(cfg["endpoints"])
        self.manifest_pull = self.enabled and cfg["manifest_pull"]
        self.blob_push = self.enabled and cfg["blob_push"]
        self.blob_pull = self.enabled and cfg["blob_pull"]
        self._index = index
        self._source = Source.here(config["storage"]["listen"].rpartition(":")[2])
        self._unrecorded = metrics.counter(
            "dockyard_notifications_unrecorded_total",
            "user events that could not be queued (the index was unavailable)",
            ["action"]) if metrics is not None else None

    def _event(self, req: falcon.Request, action: str, target: Target) -> Event:
        return Event(action, target, request_record(req), self._source,
                     actor=unquote(req.get_header(IDENTITY_HEADER) or ""))

    @staticmethod
    def _manifest_target(req: falcon.Request, name: str, digest: str, media_type: str,
                         size: int, tag: str | None) -> Target:
        return Target(name, digest, media_type, size,
                      external_url(req, f"/v2/{name}/manifests/{digest}"), tag or "")

    # -- index changes: the JSON to attach to the index call -----------------

    def manifest_pushed(self, req: falcon.Request, name: str, digest: str, media_type: str,
                        size: int, tag: str | None) -> str | None:
        if not self.enabled:
            return None
        target = self._manifest_target(req, name, digest, media_type, size, tag)
        return self._event(req, PUSH, target).to_json()

    def manifest_deleted(self, req: falcon.Request, name: str,
                         digest: str) -> tuple[str, str] | None:
        """The manifest's delete event, and the template of the tag delete event the
        index adds for each tag it removes with it (`services.index.store`)."""
        if not self.enabled:
            return None
        tags = self._event(req, DELETE, Target(name, tag="__TAG__"))
        return (self._event(req, DELETE, Target(name, digest)).to_json(),
                Event(tags.action, tags.target, tags.request, tags.source, tags.actor,
                      id="__ID__", timestamp=tags.timestamp).to_json())

    def tag_deleted(self, req: falcon.Request, name: str, tag: str) -> str | None:
        if not self.enabled:
            return None
        return self._event(req, DELETE, Target(name, tag=tag)).to_json()

    def repository_deleted(self, req: falcon.Request, name: str) -> None:
        """After a repository delete (whose manifests and tags each made their own
        events): one event of target ``{repository}``."""
        if self.enabled:
            self.record(self._event(req, DELETE, Target(name)))

    # -- events of their own -------------------------------------------------

    def manifest_pulled(self, req: falcon.Request, name: str, digest: str, media_type: str,
                        size: int, tag: str | None) -> None:
        if self.manifest_pull and req.method == "GET":
            self.record(self._event(req, PULL, self._manifest_target(
                req, name, digest, media_type, size, tag)))

    def _blob_target(self, req: falcon.Request, name: str, digest: str, size: int,
                     from_repository: str = "") -> Target:
        return Target(name, digest, BLOB_MEDIA_TYPE, size,
                      external_url(req, f"/v2/{name}/blobs/{digest}"),
                      from_repository=from_repository)

    def blob_pushed(self, req: falcon.Request, name: str, digest: str, size: int) -> None:
        if self.blob_push:
            self.record(self._event(req, PUSH, self._blob_target(req, name, digest, size)))

    def blob_mounted(self, req: falcon.Request, name: str, digest: str, size: int,
                     from_repository: str) -> None:
        if self.blob_push:
            self.record(self._event(req, MOUNT, self._blob_target(
                req, name, digest, size, from_repository)))

    def blob_deleted(self, req: falcon.Request, name: str, digest: str) -> None:
        if self.blob_push:
            self.record(self._event(req, DELETE, Target(name, digest)))

    def blob_pulled(self, req: falcon.Request, name: str, digest: str, size: int) -> None:
        if self.blob_pull and req.method == "GET":
            self.record(self._event(req, PULL, self._blob_target(req, name, digest, size)))

    def record(self, event: Event) -> None:
        text = event.to_json()
        try:
            self._index.record_event(text)
        except errors.Unavailable:
            if self._unrecorded is not None:
                self._unrecorded.labels(event.action).inc()
            log.warning("could not queue a %s event of %s; the event was: %s",
                        event.action, event.target.repository, text)
