"""Audit lines: every push, tag change and delete, with who did it.

One line per successful write on logger ``dockyard.audit``::

    audit identity=alice action=tag repository=team-a/app reference=v1 digest=sha256:...

Actions: ``push`` (a manifest by digest), ``tag`` (a manifest put under a
tag: a tag created or moved), ``push-blob`` (an upload completed or a blob
mounted), ``delete`` (a manifest, tag or blob), ``delete-repository`` (every
tag and manifest of a repository, ``DELETE /api/v1/repositories/<name>``).
The identity is ``-`` for anonymous callers and when access control is off.
Credentials never appear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dockyard.audit")

MANIFEST, BLOB, UPLOADS, UPLOAD = "manifest", "blob", "uploads", "upload"
REPOSITORY = "repository"  # services.router.app's kind of the admin repository route


def _action(kind: str, method: str, reference: str) -> str | None:
    if method == "DELETE" and kind in (MANIFEST, BLOB):
        return "delete"
    if method == "DELETE" and kind == REPOSITORY:
        return "delete-repository"
    if method == "PUT" and kind == MANIFEST:
        return "push" if reference.startswith("sha256:") or ":" in reference else "tag"
    if (method == "PUT" and kind == UPLOAD) or (method == "POST" and kind == UPLOADS):
        return "push-blob"
    return None


def wrap(start_response: Callable[..., Any], kind: str, method: str, identity: str,
         groups: dict[str, str]) -> Callable[..., Any]:
    """`start_response` that logs an audit line when the write it answers succeeded."""
    reference = groups.get("reference") or groups.get("digest") or ""
    action = _action(kind, method, reference)
    if action is None:
        return start_response

    def audited(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if (status[:1] == "2" and not status.startswith("202")) or (
                status.startswith("202") and method == "DELETE"):
            digest = next((v for k, v in headers if k.lower() == "docker-content-digest"),
                          reference if reference.startswith("sha256:") else "-")
            log.info("audit identity=%s action=%s repository=%s reference=%s digest=%s",
                     identity or "-", action, groups.get("name", "-"), reference or "-",
                     digest)
        return start_response(status, headers, exc_info)

    return audited
