"""Upload sessions bound to the identity and repository that opened them.

The router appends ``_state=<mac>`` to every upload-session Location it
passes back (as distribution's ``_state`` parameter), where the MAC is
HMAC-SHA256 over (identity, repository, upload id) under a secret that every
router of a deployment derives from the token signing key. A PATCH, PUT, GET
or DELETE on a session needs the MAC of its caller: another identity (or a
caller who learnt the URL without the parameter) gets BLOB_UPLOAD_UNKNOWN, the
answer for a session that does not exist. Storage needs no change and no
shared state, and clients keep the query string of a Location as the spec
requires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit, urlunsplit

PARAM = "_state"


class UploadBinding:
    def __init__(self, secret: bytes) -> None:
        self._secret = hashlib.sha256(b"dockyard upload state\0" + secret).digest()

    def mac(self, identity: str, repository: str, upload_id: str) -> str:
        msg = "\0".join((identity, repository, upload_id)).encode("utf-8", "surrogateescape")
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def check(self, query: str, identity: str, repository: str, upload_id: str) -> bool:
        given = ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == PARAM:
                given = value
        expected = self.mac(identity, repository, upload_id)
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())

    def bind(self, location: str, identity: str, repository: str) -> str:
        """`location` (an upload session URL) with this caller's `_state` added."""
        parts = urlsplit(location)
        upload_id = parts.path.rstrip("/").rpartition("/")[2]
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k != PARAM]
        query.append((PARAM, self.mac(identity, repository, upload_id)))
        from urllib.parse import urlencode

        return urlunsplit(parts._replace(query=urlencode(query)))
