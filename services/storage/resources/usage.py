"""GET /api/v1/usage: space used per repository and registry-wide, as JSON.

Served from the answer the last collection (or `dockyard usage`) left in the
storage root (`services.gc.usage`), never computed per request: when that
answer is older than ``gc.usage_max_age`` seconds, one background thread per
process computes it again while requests go on getting the older one. Only
when there is none at all does a request wait for the first. ``computed_at``
and the ``Age`` header say how fresh it is.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import falcon

from shared import errors

log = logging.getLogger("dockyard.storage.usage")


class UsageResource:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._max_age = config["gc"]["usage_max_age"]
        self._lock = threading.Lock()
        self._refreshing = False

    def _compute(self) -> dict[str, Any]:
        from services.gc import runtime

        return runtime.fresh_usage(runtime.collector(self._config))

    def _cached(self) -> dict[str, Any] | None:
        from services.gc import runtime, usage
        from services.storage.paths import Layout

        return usage.load(Layout(self._config["storage"]["root"]).gc_file(runtime.USAGE_FILE))

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self._compute()
            except Exception:
                log.exception("computing usage failed")
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="usage", daemon=True).start()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        answer = self._cached()
        if answer is None:
            with self._lock:
                answer = self._cached()
                if answer is None:
                    try:
                        answer = self._compute()
                    except Exception:
                        log.exception("computing usage failed")
                        raise errors.Unavailable("usage cannot be computed now",
                                                 retry_after=30) from None
        age = max(0.0, time.time() - float(answer["computed_at"]))
        if age > self._max_age:
            self._refresh_in_background()
        resp.set_header("Age", str(int(age)))
        resp.content_type = "application/json"
        resp.data = json.dumps(answer).encode()
