"""The ``notifications.endpoints`` list: checked once, at load, into plain dicts.

Each endpoint is a mapping; every check names the endpoint and the key, so a
bad endpoint is reported by ``dockyard config check`` and at startup rather
than failing its deliveries later. String values may be ``_env:NAME`` (or
``_env:NAME:default``), which is how secrets and tokens stay out of the file.

Endpoint keys (defaults in ENDPOINT_DEFAULTS):

- ``name`` (required): ``[A-Za-z0-9_.-]``, unique; names the Redis consumer
  group and the dead-letter stream, so renaming an endpoint starts it afresh.
- ``url`` (required): http or https, with a host.
- ``headers``: name -> value (or list of values) sent with every POST.
- ``timeout``: seconds to connect and for each read of the answer.
- ``secret``: HMAC-SHA256 key; when set, each POST carries SIGNATURE_HEADER.
- ``backoff_initial``, ``backoff_max``: retry waits double from the first to the cap.
- ``max_age``: seconds after which an event that still fails goes to dead letters.
- ``batch_size``: most events in one POST.
- ``actions``: only these actions (empty: all).
- ``repositories``: only repositories matching one of these globs (empty: all).
- ``ignored_media_types``: events whose target has one of these media types are skipped.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared import globs

ACTIONS = ("push", "pull", "mount", "delete")
SIGNATURE_HEADER = "X-Dockyard-Webhook-Signature"
REDACTED = "<redacted>"

ENDPOINT_DEFAULTS: dict[str, Any] = {
    "name": None,
    "url": None,
    "headers": {},
    "timeout": 5.0,
    "secret": "",
    "backoff_initial": 1.0,
    "backoff_max": 60.0,
    "max_age": 86400.0,
    "batch_size": 32,
    "actions": [],
    "repositories": [],
    "ignored_media_types": [],
}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding",
                     SIGNATURE_HEADER.lower()}


class EndpointError(ValueError):
    pass


def _number(where: str, value: Any, minimum: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not isinstance(value, int)):
        raise EndpointError(f"{where}: expected {'an integer' if integer else 'a number'}, "
                            f"got {value!r}")
    if value < minimum or value != value:
        raise EndpointError(f"{where}: must be at least {minimum}")
    return value if integer else float(value)


def _strings(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EndpointError(f"{where}: expected a list of non-empty strings")
    return list(value)


def redacted_url(url: str) -> str:
    """`url` for a log line: scheme, host and port only. Many receivers (Slack,
    Teams, chat bridges) carry their secret in the path or query, some in the
    user-info part, and a log line must hold none of them."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}{rest}"


def _url(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise EndpointError(f"{where}: required, an http or https URL")
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or (
            any(c.isspace() for c in value)):
        raise EndpointError(f"{where}: not an http or https URL: {redacted_url(value)!r}")
    return value


def _headers(where: str, value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise EndpointError(f"{where}: expected a mapping of header name to value")
    out: dict[str, list[str]] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise EndpointError(f"{where}: not a valid header name: {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise EndpointError(f"{where}.{name}: set by dockyard itself")
        values = raw if isinstance(raw, list) else [raw]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise EndpointError(f"{where}.{name}: expected a string value")
            if any(c in str(v) for c in "\r\n\0"):
                raise EndpointError(f"{where}.{name}: a header value may not hold a "
                                    "line break or NUL")
            try:
                str(v).encode("latin-1")
            except UnicodeEncodeError:
                raise EndpointError(f"{where}.{name}: a header value must be Latin-1 "
                                    "text") from None
        out[name] = [str(v) for v in values]
    return out


def _globs(where: str, value: Any) -> list[str]:
    patterns = _strings(where, value)
    for p in patterns:
        try:
            globs.compile_glob(p)
        except globs.GlobError as e:
            raise EndpointError(f"{where}: bad pattern {p!r}: {e}") from None
    return patterns


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "url": _url,
    "headers": _headers,
    "timeout": lambda w, v: _number(w, v, 0.05),
    "backoff_initial": lambda w, v: _number(w, v, 0.01),
    "backoff_max": lambda w, v: _number(w, v, 0.01),
    "max_age": lambda w, v: _number(w, v, 1),
    "batch_size": lambda w, v: _number(w, v, 1, integer=True),
    "actions": _strings,
    "repositories": _globs,
    "ignored_media_types": _strings,
}


def _expand(value: Any, environ: dict[str, str]) -> Any:
    """``_env:NAME[:default]`` in any string, as `shared.config` does for plain keys."""
    if isinstance(value, str) and value.startswith("_env:"):
        name, _, default = value[len("_env:"):].partition(":")
        return environ.get(name, default)
    if isinstance(value, list):
        return [_expand(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, environ) for k, v in value.items()}
    return value


def check_endpoints(where: str, value: Any, environ: dict[str, str]) -> list[dict[str, Any]]:
    """The endpoints list, each one complete with defaults; EndpointError names what is bad."""
    if not isinstance(value, list):
        raise EndpointError(f"{where}: expected a list of endpoint mappings")
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise EndpointError(f"{where}[{i}]: expected a mapping with name and url")
        name = raw.get("name")
        here = f"{where}[{name if isinstance(name, str) and name else i}]"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise EndpointError(f"{here}.name: required, 1-64 of A-Z a-z 0-9 _ . -")
        if name in seen:
            raise EndpointError(f"{here}.name: two endpoints are named {name!r}")
        seen.add(name)
        unknown = set(raw) - set(ENDPOINT_DEFAULTS)
        if unknown:
            raise EndpointError(f"{here}.{sorted(unknown)[0]}: unknown key")
        endpoint = copy.deepcopy(ENDPOINT_DEFAULTS)
        endpoint["name"] = name
        for key, v in _expand(raw, environ).items():
            if key == "name":
                continue
            if key == "secret":
                if v is not None and not isinstance(v, str):
                    raise EndpointError(f"{here}.secret: expected a string")
                endpoint[key] = v or ""
                continue
            endpoint[key] = _CHECKS[key](f"{here}.{key}", v)
        if endpoint["url"] is None:
            raise EndpointError(f"{here}.url: required, an http or https URL")
        bad = [a for a in endpoint["actions"] if a not in ACTIONS]
        if bad:
            raise EndpointError(f"{here}.actions: {bad[0]!r} is not one of "
                                f"{', '.join(ACTIONS)}")
        if endpoint["backoff_max"] < endpoint["backoff_initial"]:
            raise EndpointError(f"{here}.backoff_max: must be at least backoff_initial")
        out.append(endpoint)
    return out


def check_section(section: dict[str, Any]) -> None:
    """Checks across keys of the ``notifications`` section."""
    longest = max((e["timeout"] for e in section["endpoints"]), default=0.0)
    if section["endpoints"] and section["claim_idle"] < 2 * longest:
        raise EndpointError(
            f"notifications.claim_idle: must be at least twice the longest endpoint timeout "
            f"({2 * longest:g}s): a dispatcher in the middle of a POST would otherwise "
            "lose its events to another")


def matches(endpoint: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether the endpoint's filters let the event (distribution's JSON) through."""
    if endpoint["actions"] and event.get("action") not in endpoint["actions"]:
        return False
    target = event.get("target") or {}
    if target.get("mediaType") in endpoint["ignored_media_types"]:
        return False
    patterns = endpoint["repositories"]
    repo = target.get("repository", "")
    return not patterns or globs.matches_any(patterns, repo)


def redacted(endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The endpoints with secrets and header values hidden, for printing."""
    out = []
    for e in endpoints:
        e = dict(e)
        if e.get("secret"):
            e["secret"] = REDACTED
        e["headers"] = {k: [REDACTED] * len(v) for k, v in e.get("headers", {}).items()}
        out.append(e)
    return out
