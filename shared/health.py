"""/healthz (the process answers) and /readyz (it can do its work)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import falcon


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/json"
        resp.data = b'{"status":"ok"}'


class ReadyResource:
    """Ready when `check()` returns (True, details)."""

    def __init__(self, check: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self._check = check

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            ready, details = self._check()
        except Exception as e:  # a readiness probe reports, it never raises
            ready, details = False, {"error": type(e).__name__}
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.content_type = "application/json"
        resp.data = json.dumps({"ready": ready, **details}).encode()


def add_health_routes(app: falcon.App, ready: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(ready))
