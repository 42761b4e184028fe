"""Service-to-service authentication: storage and the index answer only dockyard's own calls.

In a scaled-out deployment the storage and index ports are reachable from the
network, and what they accept is trusted: the router's `X-Dockyard-*`
headers name files to hand over, the msgpack RPC moves tags. So every call
into them carries an HMAC-SHA256 signature keyed by a secret that only
dockyard's processes hold.

The rules:

- **What is signed.** The canonical form of a request is::

      dockyard-v1 LF METHOD LF timestamp LF nonce LF body LF len(path) LF
      x-dockyard-a:value LF x-dockyard-b:value LF ... path[?query]

  The path is percent-decoded, exactly as a WSGI server hands it over in
  PATH_INFO (so the signer and the verifier agree whatever quoting a proxy
  chose); the query string is as sent. *Every* ``X-Dockyard-*`` header of the
  request is listed, sorted by lower-cased name, so none can be added, removed
  or changed. ``body`` is the hex SHA-256 of the body, or ``-`` for a streamed
  body (a blob or manifest passing through the router, whose bytes are
  content-addressed anyway). Calls to ``/internal/`` (the msgpack RPC) must
  sign their body.
- **The header.** ``X-Dockyard-Signature: v1 <unix seconds> <nonce> <body> <hex mac>``.
- **Freshness.** The timestamp must be within `max_skew` seconds of the
  verifier's clock, and a process accepts each nonce once: a captured
  request cannot be replayed to the same process; replayed to another one it
  expires with the timestamp. The nonce store holds at least ``2 * max_skew``
  seconds of nonces (three generations of `max_skew` each), so its memory is
  bounded by the request rate.
- **What is exempt.** GET and HEAD of ``/healthz``, ``/readyz`` and
  ``/metrics``: probes and Prometheus scrapers cannot sign, and these answer
  with process state only, never repository data.
- **Refusal.** 401 with the registry's JSON error body, before the service's
  own code runs: a refused request touches nothing.

The secret comes from the configuration (`internal.secret`, or a file named by
`internal.secret_file`); `dockyard serve` generates one in its data directory.
Signing costs a few microseconds per request (one HMAC over ~150 bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from shared.config import ConfigError

log = logging.getLogger("dockyard.service_auth")

SIGNATURE_HEADER = "X-Dockyard-Signature"
_SIGNATURE_ENVIRON = "HTTP_X_DOCKYARD_SIGNATURE"
_INTERNAL_PREFIX = "HTTP_X_DOCKYARD_"
VERSION = "v1"
STREAMED = "-"
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# The largest body a verifier reads to check its digest (RPC bodies are small).
MAX_SIGNED_BODY = 64 * 1024 * 1024
MIN_SECRET_LENGTH = 16
SECRET_FILE_NAME = "internal-secret"


def _keyed(secret: str | bytes) -> Any:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_LENGTH:
        raise ValueError(f"the internal secret must be at least {MIN_SECRET_LENGTH} bytes")
    # Keyed once; each MAC starts from a copy (a third cheaper than hmac.digest).
    return hmac.new(raw, digestmod=hashlib.sha256)


class ServiceKey:
    """Signs requests with one shared secret, and verifies them with it or with
    any of `also_accept` (for changing the secret without refusing calls)."""

    def __init__(self, secret: str | bytes, max_skew: float = 30.0,
                 also_accept: Iterable[str | bytes] = ()) -> None:
        self._hmac = _keyed(secret)
        self._accepted = [self._hmac, *(_keyed(s) for s in also_accept)]
        self.max_skew = max_skew
        # Unique per process and per call: a random prefix and a counter.
        self._prefix = base64.urlsafe_b64encode(os.urandom(9)).decode()
        self._counter = itertools.count()
        self._seen = _SeenNonces(max(1.0, max_skew))

    # -- signing --------------------------------------------------------------------

    def _mac(self, method: str, path: bytes, stamp: str, nonce: str, body: str,
             internal: Iterable[tuple[str, str]], keyed: Any = None) -> str:
        # No field but the path may hold a line feed; the path goes last, with its
        # length up front, so that no two requests share a canonical form.
        text = "\n".join([f"dockyard-v1\n{method}", stamp, nonce, body, str(len(path)),
                          *(f"{k}:{v}" for k, v in sorted(internal)), ""])
        mac = (keyed or self._hmac).copy()
        mac.update(text.encode("latin-1"))
        mac.update(path)
        return mac.hexdigest()

    def sign(self, method: str, target: str, headers: Iterable[tuple[str, str]],
             body: Any = None, now: float | None = None) -> str:
        """The signature header's value for a request about to be sent.

        `target` is the request target as sent (percent-encoded path and
        query); `body` is bytes (its digest is signed), None (no body) or
        anything else (a stream: ``-``).
        """
        path, _, query = target.partition("?")
        canonical = unquote_to_bytes(path) if "%" in path else path.encode("latin-1")
        if query:
            canonical += b"?" + query.encode("latin-1")
        if body is None:
            digest = EMPTY_DIGEST
        elif isinstance(body, bytes | bytearray | memoryview):
            digest = hashlib.sha256(body).hexdigest()
        else:
            digest = STREAMED
        stamp = str(int(time.time() if now is None else now))
        nonce = f"{self._prefix}{next(self._counter)}"
        internal = [(k.lower().replace("_", "-"), v.strip()) for k, v in headers
                    if k.lower().startswith("x-dockyard-")
                    and k.lower() != "x-dockyard-signature"]
        mac = self._mac(method, canonical, stamp, nonce, digest, internal)
        return f"{VERSION} {stamp} {nonce} {digest} {mac}"

    # -- verifying ------------------------------------------------------------------

    def verify(self, environ: dict[str, Any]) -> str | None:
        """None when the WSGI request is signed by this secret; else why not.

        A request whose body digest was signed has its body read and checked
        here; `wsgi.input` is then replaced by the bytes read.
        """
        value = environ.get(_SIGNATURE_ENVIRON)
        if not value:
            return "no signature"
        fields = value.split(" ")
        if len(fields) != 5 or fields[0] != VERSION:
            return "malformed signature"
        _, stamp, nonce, digest, mac = fields
        if not stamp.isdigit() or not 0 < len(nonce) <= 64 or len(mac) != 64:
            return "malformed signature"
        if abs(time.time() - int(stamp)) > self.max_skew:
            return "stale or future timestamp"
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        canonical = path.encode("latin-1")
        if environ.get("QUERY_STRING"):
            canonical += b"?" + environ["QUERY_STRING"].encode("latin-1")
        internal = [(k[5:].lower().replace("_", "-"), v) for k, v in environ.items()
                    if k.startswith(_INTERNAL_PREFIX) and k != _SIGNATURE_ENVIRON]
        if not any(hmac.compare_digest(self._mac(environ["REQUEST_METHOD"], canonical, stamp,
                                                 nonce, digest, internal, keyed), mac)
                   for keyed in self._accepted):
            return "bad signature"
        if digest == STREAMED:
            if path.startswith("/internal/"):
                return "internal calls must sign their body"
        elif (problem := _check_body(environ, digest)) is not None:
            return problem
        # Last, so that a forged request cannot fill the store.
        if not self._seen.add(nonce):
            return "replayed request"
        return None


def _check_body(environ: dict[str, Any], digest: str) -> str | None:
    length_text = environ.get("CONTENT_LENGTH") or "0"
    if not length_text.isdigit():
        return "bad Content-Length"
    length = int(length_text)
    if length == 0:
        return None if hmac.compare_digest(digest, EMPTY_DIGEST) else "body does not match"
    if length > MAX_SIGNED_BODY:
        return "signed body too large"
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), digest):
        return "body does not match"
    return None


class _SeenNonces:
    """The nonces accepted in the last 2-3 generations of `span` seconds each."""

    def __init__(self, span: float, max_entries: int = 2_000_000) -> None:
        self._span = span
        self._max = max_entries
        self._generations: list[set[str]] = [set(), set(), set()]
        self._rotated = time.monotonic()
        self._lock = threading.Lock()

    def add(self, nonce: str) -> bool:
        """Record `nonce`; False when it was seen already."""
        now = time.monotonic()
        with self._lock:
            current = self._generations[0]
            if now - self._rotated >= self._span or len(current) >= self._max:
                if len(current) >= self._max:
                    log.warning("nonce store full: replay protection shortened")
                current = set()
                self._generations = [current, self._generations[0], self._generations[1]]
                self._rotated = now
            if any(nonce in g for g in self._generations):
                return False
            current.add(nonce)
            return True


def _refusal(reason: str) -> bytes:
    # Imported here: `shared.errors` brings in falcon (~17 MiB of RSS), which
    # the supervisor, a user of this module's key handling only, does not need.
    from shared import errors

    err = errors.RegistryError("this endpoint answers only dockyard's own services",
                               detail={"reason": reason})
    err.code = "UNAUTHORIZED"
    return errors.render(err)


class RequireSignature:
    """WSGI middleware: refuse every request not signed by `key` (except health/metrics)."""

    def __init__(self, app: Callable[..., Any], key: ServiceKey,
                 exempt: frozenset[str] = EXEMPT_PATHS) -> None:
        self._app = app
        self._key = key
        self._exempt = exempt

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if (environ.get("PATH_INFO") in self._exempt
                and environ.get("REQUEST_METHOD") in ("GET", "HEAD")):
            return self._app(environ, start_response)
        reason = self._key.verify(environ)
        if reason is None:
            return self._app(environ, start_response)
        log.warning("refused an unsigned internal call from %s: %s %s (%s)",
                    environ.get("REMOTE_ADDR", "?"), environ.get("REQUEST_METHOD"),
                    environ.get("PATH_INFO", "")[:200], reason)
        body = _refusal(reason)
        start_response("401 Unauthorized", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("WWW-Authenticate", 'DockyardService realm="dockyard internal"'),
        ])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


# -- the secret -------------------------------------------------------------------------


def key_from_config(config: dict[str, Any]) -> ServiceKey:
    """The key of `internal.secret`, else of the file `internal.secret_file`."""
    section = config["internal"]
    secret = section["secret"]
    where = "internal.secret"
    if not secret and section["secret_file"]:
        where = "internal.secret_file"
        try:
            secret = Path(section["secret_file"]).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {section['secret_file']}: "
                              f"{e.strerror}") from None
    if not secret:
        raise ConfigError("internal.secret: not set. Storage and the index accept only "
                          "calls signed with a secret every dockyard process shares; set "
                          "internal.secret (or internal.secret_file), or use `dockyard serve`, "
                          "which generates one")
    for name, value in ((where, secret), *(("internal.also_accept", s)
                                           for s in section["also_accept"])):
        try:
            _keyed(value)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    return ServiceKey(secret, section["max_clock_skew"], section["also_accept"])


def ensure_secret_file(path: Path) -> Path:
    """Create `path` with a new random secret (mode 0600) unless it exists; return it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path
