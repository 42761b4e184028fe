"""The OCI error model: one exception class per error code, rendered in one place.

Every service raises these; `install(app)` makes Falcon render them (and its
own HTTP errors, and any unexpected exception) as the spec's
``{"errors": [{"code", "message", "detail"}]}`` body, so no stack trace or
internal path ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

log = logging.getLogger("dockyard.errors")


class RegistryError(Exception):
    """An error with an OCI/Docker error code, status and optional detail."""

    status: int = 400
    code: str = "UNKNOWN"
    message: str = "unknown error"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        entry["detail"] = self.detail if self.detail is not None else {}
        return {"errors": [entry]}


def _error(name: str, status: int, code: str, message: str) -> type[RegistryError]:
    return type(name, (RegistryError,), {"status": status, "code": code, "message": message})


# The codes of the OCI distribution spec, with the statuses it names.
BlobUnknown = _error("BlobUnknown", 404, "BLOB_UNKNOWN", "blob unknown to registry")
BlobUploadInvalid = _error("BlobUploadInvalid", 400, "BLOB_UPLOAD_INVALID", "blob upload invalid")
BlobUploadUnknown = _error(
    "BlobUploadUnknown", 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry"
)
DigestInvalid = _error(
    "DigestInvalid", 400, "DIGEST_INVALID", "provided digest did not match uploaded content"
)
ManifestBlobUnknown = _error(
    "ManifestBlobUnknown", 400, "MANIFEST_BLOB_UNKNOWN", "manifest references an unknown blob"
)
ManifestInvalid = _error("ManifestInvalid", 400, "MANIFEST_INVALID", "manifest invalid")
ManifestTooLarge = _error("ManifestTooLarge", 413, "MANIFEST_INVALID", "manifest too large")
ManifestUnknown = _error("ManifestUnknown", 404, "MANIFEST_UNKNOWN", "manifest unknown")
NameInvalid = _error("NameInvalid", 400, "NAME_INVALID", "invalid repository name")
NameUnknown = _error("NameUnknown", 404, "NAME_UNKNOWN", "repository name not known to registry")
SizeInvalid = _error("SizeInvalid", 400, "SIZE_INVALID", "provided length did not match content")
Unsupported = _error("Unsupported", 405, "UNSUPPORTED", "the operation is unsupported")
TooManyRequests = _error("TooManyRequests", 429, "TOOMANYREQUESTS", "too many requests")
# A tag is a manifest reference; the spec has no TAG_INVALID, distribution answers this.
TagInvalid = _error("TagInvalid", 400, "MANIFEST_INVALID", "invalid tag")
# Docker distribution's code for a bad `n`.
PaginationNumberInvalid = _error(
    "PaginationNumberInvalid", 400, "PAGINATION_NUMBER_INVALID", "invalid number of results"
)
# A chunk that does not continue the upload where it stands.
RangeInvalid = _error("RangeInvalid", 416, "BLOB_UPLOAD_INVALID", "invalid content range")
NotFound = _error("NotFound", 404, "NOT_FOUND", "not found")
# A search query refused (/v1/search is Docker's API, outside the spec's table).
SearchQueryInvalid = _error("SearchQueryInvalid", 400, "UNSUPPORTED", "invalid search query")
MethodNotAllowed = _error("MethodNotAllowed", 405, "UNSUPPORTED", "method not allowed")
StorageFull = _error("StorageFull", 507, "UNKNOWN", "insufficient storage on the registry")
# Access control (shared/auth): no or bad credentials, and a caller without the permission.
Unauthorized = _error("Unauthorized", 401, "UNAUTHORIZED", "authentication required")
Denied = _error("Denied", 403, "DENIED", "requested access to the resource is denied")


class RangeNotSatisfiable(RegistryError):
    status = 416
    code = "BLOB_UNKNOWN"
    message = "requested range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(headers={"Content-Range": f"bytes */{size}"})


class Unavailable(RegistryError):
    """A backend the request needs is down; the client should retry."""

    status = 503
    code = "UNAVAILABLE"
    message = "service temporarily unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        # Whether the backend may have done the work anyway (a timeout, not a refusal).
        self.maybe_applied = True


class InternalError(RegistryError):
    status = 500
    code = "UNKNOWN"
    message = "internal server error"


def render(error: RegistryError) -> bytes:
    return json.dumps(error.body()).encode()


def _status_line(status: int) -> str:
    return falcon.code_to_http_status(status)


def respond(resp: falcon.Response, ex: RegistryError) -> None:
    """Turn `resp` into the error response for `ex`."""
    resp.status = _status_line(ex.status)
    resp.content_type = "application/json"
    resp.data = render(ex)
    for name, value in ex.headers.items():
        resp.set_header(name, value)


# The URL segments after a repository name, in the shapes of `shared.routing`, and
# what the thing each one names is called when the rest of the URL is no valid id.
_UNROUTED_KINDS = ("/blobs/uploads/", "/blobs/", "/manifests/", "/referrers/", "/tags/")


def unrouted(method: str, path: str) -> RegistryError:
    """The error for a request whose path matches no route.

    Under /v2/ such a path names a repository's blob, upload, manifest or
    referrers with an id no valid one looks like: a percent-encoded "/" or
    "../" in a digest or upload id, a raw non-ASCII byte. The answer is the
    spec's code for that thing: an invalid repository name is NAME_INVALID;
    an upload id, BLOB_UPLOAD_UNKNOWN (no such session can exist); a digest,
    DIGEST_INVALID; a manifest reference, MANIFEST_UNKNOWN, except for a PUT,
    whose invalid tag is refused as such. Anything else is NOT_FOUND: no code
    of the spec's table names a URL outside its API.
    """
    from shared.validation import is_valid_name  # validation imports this module

    if not path.startswith("/v2/"):
        return NotFound(detail={"path": path[:200]})
    rest = path[4:]
    found = [(i, kind) for kind in _UNROUTED_KINDS[:-1] if (i := rest.find(kind)) > 0]
    # "/tags/" may be a component of a name ("a/tags/b"); it counts only alone.
    found = found or [(i, "/tags/") for i in [rest.find("/tags/")] if i > 0]
    if not found:
        return NotFound(detail={"path": path[:200]})
    # The first segment ends the name; at one position "/blobs/uploads/" wins.
    at, kind = min(found, key=lambda f: (f[0], _UNROUTED_KINDS.index(f[1])))
    name, ref = rest[:at], rest[at + len(kind):][:200]
    if not is_valid_name(name):
        return NameInvalid(detail={"name": name[:200]})
    if kind == "/blobs/uploads/":
        return BlobUploadUnknown(detail={"uuid": ref})
    if kind in ("/blobs/", "/referrers/"):
        return DigestInvalid("invalid digest", detail={"digest": ref})
    if kind == "/manifests/":
        if method == "PUT":
            return TagInvalid(detail={"tag": ref})
        return ManifestUnknown(detail={"reference": ref})
    return NotFound(detail={"path": path[:200]})


def allowed_methods(resource: object) -> set[str]:
    """The methods `resource` answers (RFC 9110: HEAD wherever GET), for an Allow header."""
    methods = {m for m in falcon.COMBINED_METHODS if hasattr(resource, f"on_{m.lower()}")}
    return methods | ({"HEAD"} if "GET" in methods else set())


class _UnknownMethods:
    """Falcon answers a method it has never heard of (``BREW /v2/``) with a 400 of
    its own; the spec's answer is 405 UNSUPPORTED, and RFC 9110 wants an Allow."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict[str, Any]) -> None:
        if req.method not in falcon.COMBINED_METHODS:
            raise MethodNotAllowed(detail={"method": req.method[:50]}, headers={
                "Allow": ", ".join(sorted(allowed_methods(resource)))})


def _handle_registry_error(req: falcon.Request, resp: falcon.Response, ex: RegistryError,
                           params: dict[str, Any]) -> None:
    respond(resp, ex)


# Falcon's own errors (unmatched routes, bad query strings) mapped to our codes.
_FALCON_STATUS_CODES = {
    405: MethodNotAllowed,
    413: SizeInvalid,
}


def _handle_falcon_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError,
                         params: dict[str, Any]) -> None:
    status = int(ex.status_code)
    if status == 404:
        _handle_registry_error(req, resp, unrouted(req.method, req.path), params)
        return
    cls = _FALCON_STATUS_CODES.get(status)
    err = cls() if cls else RegistryError(ex.title or "error")
    err.status = status
    if ex.description:
        err.detail = {"reason": ex.description}
    _handle_registry_error(req, resp, err, params)
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def _handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception,
                       params: dict[str, Any]) -> None:
    if isinstance(ex, OSError) and ex.errno == 28:  # ENOSPC
        log.error("storage full while handling %s %s", req.method, req.path)
        _handle_registry_error(req, resp, StorageFull(), params)
        return
    log.exception("unhandled error in %s %s", req.method, req.path)
    _handle_registry_error(req, resp, InternalError(), params)


def install(app: falcon.App) -> None:
    """Render every error of `app` as an OCI error body."""
    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(falcon.HTTPError, _handle_falcon_error)
    app.add_error_handler(RegistryError, _handle_registry_error)
    app.add_middleware(_UnknownMethods())
