"""One POST of an envelope to an endpoint, and the signature that goes with it.

The signature is HMAC-SHA256 of the exact body bytes with the endpoint's
secret, sent as ``X-Dockyard-Webhook-Signature: sha256=<hex>`` (the form GitHub's
``X-Hub-Signature-256`` made familiar). A receiver recomputes it over the raw
body it read and compares in constant time (docs/webhooks.md has the code).

Only a 2xx answer counts as delivered; any other status, a refused
connection or a timeout is a failure to retry. The endpoint's ``timeout``
bounds the connect and each read of the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.notify_config import SIGNATURE_HEADER
from shared.user_events import MEDIA_TYPE

USER_AGENT = "dockyard-notifications"
# A receiver's answer is read (so the connection ends cleanly) but never used.
MAX_ANSWER = 64 * 1024


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does; used by the tests and shown in the docs."""
    return hmac.compare_digest(sign(secret, body), header or "")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "HTTP 200", "HTTP 500", "timed out", "connection refused", ...
    seconds: float


def post(endpoint: dict[str, Any], body: bytes) -> Outcome:
    started = time.monotonic()
    parts = urlsplit(endpoint["url"])
    timeout = endpoint["timeout"]
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Content-Type", MEDIA_TYPE)
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("User-Agent", USER_AGENT)
        if endpoint["secret"]:
            conn.putheader(SIGNATURE_HEADER, sign(endpoint["secret"], body))
        for name, values in endpoint["headers"].items():
            for value in values:
                conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read(MAX_ANSWER)
        detail = f"HTTP {resp.status}"
        return Outcome(200 <= resp.status < 300, detail, time.monotonic() - started)
    except TimeoutError:
        return Outcome(False, f"timed out after {timeout:g}s", time.monotonic() - started)
    except (OSError, http.client.HTTPException, ValueError) as e:
        # ValueError: what http.client raises for a URL or header it cannot send.
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return Outcome(False, str(reason).lower(), time.monotonic() - started)
    finally:
        conn.close()
