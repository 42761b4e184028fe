"""The webhook events of what the collector deletes.

A tag that a retention policy removes, and an untagged manifest the collector
deletes, are deletes that no client asked for; a deploy bot, a scanner or an
audit trail that follows the registry through its webhooks still needs to see
them. They are recorded the way a client's DELETE is (`services.index.store`:
in the same script as the index change, so none is lost or invented), in
distribution's envelope, with ``actor.name`` ``dockyard-gc`` and a request
record whose user agent names the collector. One request id per collection
run groups its events. Nothing is recorded when no webhook endpoint is
configured, or on a dry run.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

from shared.user_events import DELETE, Event, RequestRecord, Source, Target

ACTOR = "dockyard-gc"


class GcEvents:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._source = Source(socket.gethostname())
        self._request = RequestRecord(str(uuid.uuid4()), "DELETE", useragent=ACTOR)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GcEvents:
        return cls(bool(config["notifications"]["endpoints"]))

    def new_run(self) -> None:
        self._request = RequestRecord(str(uuid.uuid4()), "DELETE", useragent=ACTOR)

    def _event(self, target: Target) -> str | None:
        if not self.enabled:
            return None
        return Event(DELETE, target, self._request, self._source, actor=ACTOR).to_json()

    def tag_removed(self, name: str, tag: str) -> str | None:
        return self._event(Target(name, tag=tag))

    def manifest_removed(self, name: str, digest: str) -> str | None:
        return self._event(Target(name, digest))
