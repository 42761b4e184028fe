"""The access a request needs, derived from its method and route alone.

As distribution's appendAccessRecords: GET and HEAD need pull; POST, PUT and
PATCH need pull and push; DELETE needs delete; any other method needs all
three. One exception: cancelling an upload session (DELETE on it) needs what
writing to it needs, pull and push, since it removes nothing stored and the
session is the caller's own (see `upload_state`). A method-override header
(``X-HTTP-Method-Override`` and kin) adds the needs of the method it names,
so that a backend that honoured one could never turn an allowed GET into a
DELETE. A mount's source (``?from=``) needs pull;
`mount_source` names it, and the router turns a mount the caller may not read
into an ordinary upload instead of refusing it, which would reveal the blob.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from shared.auth.policy import ALL, DELETE, PULL, PUSH

_BY_METHOD = {
    "GET": frozenset({PULL}), "HEAD": frozenset({PULL}),
    "POST": frozenset({PULL, PUSH}), "PUT": frozenset({PULL, PUSH}),
    "PATCH": frozenset({PULL, PUSH}), "DELETE": frozenset({DELETE}),
}
_OVERRIDES = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")


def required(environ: dict[str, Any], upload_session: bool = False) -> frozenset[str]:
    """The actions the request's method (and any override it carries) needs."""
    method = environ.get("REQUEST_METHOD", "")
    if not (upload_session and method == "DELETE") and not any(k in environ
                                                                for k in _OVERRIDES):
        return _BY_METHOD.get(method, ALL)
    methods = [environ.get("REQUEST_METHOD", "")]
    methods += [environ[key].strip().upper() for key in _OVERRIDES if key in environ]
    needs: frozenset[str] = frozenset()
    for method in methods:
        if upload_session and method == "DELETE":
            method = "PATCH"
        needs = needs | _BY_METHOD.get(method, ALL)
    return needs


def mount_source(environ: dict[str, Any]) -> str | None:
    """The `from=` repository of a cross-repository mount request, if it is one."""
    query = environ.get("QUERY_STRING", "")
    if "mount=" not in query:
        return None
    params = dict(parse_qsl(query, keep_blank_values=True))
    if "mount" not in params:
        return None
    return params.get("from")


def without_mount(query: str) -> str:
    """The query string with `mount` and `from` removed: an ordinary upload."""
    from urllib.parse import urlencode

    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in ("mount", "from")]
    return urlencode(kept)
