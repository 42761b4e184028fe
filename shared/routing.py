"""Regex routes for Falcon.

Repository names contain slashes (``library/ubuntu``), which Falcon's URI
templates cannot capture mid-path, so every registry route is a full regex
whose named groups become the responder's keyword arguments.
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from shared import errors


class _RegexRoute:
    def __init__(self, pattern: str, resource: object) -> None:
        self.regex = re.compile(pattern)
        self.resource = resource
        self.methods = {
            m for m in falcon.COMBINED_METHODS if hasattr(resource, f"on_{m.lower()}")
        }
        self.allowed = errors.allowed_methods(resource)


class RegexRouter:
    """A single Falcon sink that dispatches to resources by full-path regex."""

    def __init__(self) -> None:
        self._routes: list[_RegexRoute] = []

    def add(self, pattern: str, resource: object) -> None:
        self._routes.append(_RegexRoute(pattern, resource))

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_: Any) -> None:
        for route in self._routes:
            m = route.regex.fullmatch(req.path)
            if m is None:
                continue
            method = req.method
            if method == "HEAD" and "HEAD" not in route.methods and "GET" in route.methods:
                method = "GET"
            if method not in route.methods:
                # RFC 9110 15.5.6: a 405 must list the allowed methods.
                raise errors.MethodNotAllowed(
                    detail={"method": req.method[:50]},
                    headers={"Allow": ", ".join(sorted(route.allowed))})
            getattr(route.resource, f"on_{method.lower()}")(req, resp, **m.groupdict())
            return
        raise errors.unrouted(req.method, req.path)

    def install(self, app: falcon.App, prefix: str) -> None:
        app.add_sink(self, prefix)


# The registry's URL shapes, shared by the services and the router.
# Any characters: a name with a "?" (sent as %3F) or a newline is checked and
# refused with NAME_INVALID by the resource, not left to match no route.
NAME = r"(?P<name>[\s\S]+?)"
V2 = r"/v2/"
BLOB = V2 + NAME + r"/blobs/(?P<digest>[^/]+)"
UPLOADS = V2 + NAME + r"/blobs/uploads/?"
UPLOAD = V2 + NAME + r"/blobs/uploads/(?P<upload_id>[^/]+)"
MANIFEST = V2 + NAME + r"/manifests/(?P<reference>[^/]+)"
TAGS = V2 + NAME + r"/tags/list"
REFERRERS = V2 + NAME + r"/referrers/(?P<digest>[^/]+)"
CATALOG = r"/v2/_catalog"
SEARCH = r"/v1/search"
# The web UI's summary reads (services/index/resources/summaries.py).
REPOSITORY_SUMMARIES = r"/v2/_dockyard/repositories"
TAG_SUMMARIES = V2 + NAME + r"/_dockyard/tags"
