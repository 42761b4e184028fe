"""An Apache htpasswd file of bcrypt entries, re-read when it changes.

Only bcrypt entries (``$2y$``, ``$2b$``, ``$2a$``: what ``htpasswd -B`` and
`dockyard passwd` write) are accepted, as in distribution: the other formats
(MD5-crypt, SHA-1, crypt) are too cheap to guess. A line in another format is
skipped with a warning naming its line number, never its content.

The file is checked for a change (mtime, size, inode) at most once a second;
an edit takes effect without a restart, and `generation` changes with it so
that cached verifications of the old file are dropped. An unknown user costs
a bcrypt check against a dummy hash, so timing does not tell who exists.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import bcrypt

log = logging.getLogger("dockyard.auth.htpasswd")

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
CHECK_INTERVAL = 1.0
ROUNDS = 10
_DUMMY = bcrypt.hashpw(b"not a password", bcrypt.gensalt(ROUNDS))


def parse(text: bytes, source: str = "htpasswd") -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        user, sep, hashed = line.partition(b":")
        if not sep or not user:
            log.warning("%s line %d: not user:hash; skipped", source, number)
            continue
        if not hashed.startswith(BCRYPT_PREFIXES):
            log.warning("%s line %d: not a bcrypt entry (use htpasswd -B); skipped",
                        source, number)
            continue
        users[user.decode("utf-8", "replace")] = hashed
    return users


class Htpasswd:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.generation = 0
        self._users: dict[str, bytes] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            users = parse(self.path.read_bytes(), str(self.path))
        except OSError as e:
            if self._stamp is not None or self.generation == 0:
                log.error("cannot read htpasswd file %s: %s; no user can log in",
                          self.path, e.strerror)
            users, stamp = {}, None
            if self._stamp is None and self.generation:
                return
        self._users, self._stamp = users, stamp
        self.generation += 1
        log.info("htpasswd %s: %d users", self.path, len(users))

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL:
            return
        with self._lock:
            if now - self._checked < CHECK_INTERVAL:
                return
            self._checked = now
            self._reload()

    def __contains__(self, user: str) -> bool:
        self.refresh()
        return user in self._users

    def fingerprint(self, user: str) -> str | None:
        """A short digest of the user's entry: it changes when the password does."""
        self.refresh()
        hashed = self._users.get(user)
        if hashed is None:
            return None
        return hashlib.blake2b(hashed, digest_size=12).hexdigest()

    def verify(self, user: str, password: str) -> bool:
        self.refresh()
        hashed = self._users.get(user)
        secret = password.encode("utf-8", "surrogateescape")
        # bcrypt reads at most 72 bytes; a NUL would end its input early.
        if b"\0" in secret:
            secret = b""
        try:
            ok = bcrypt.checkpw(secret, hashed if hashed is not None else _DUMMY)
        except ValueError:
            log.warning("htpasswd %s: malformed bcrypt hash for a user", self.path)
            return False
        return ok and hashed is not None


def set_password(path: str | os.PathLike[str], user: str, password: str,
                 rounds: int = ROUNDS) -> bool:
    """Add or change `user` in the file (created if missing); True if the user was new.

    The file is replaced atomically, so a running registry never reads half of it.
    """
    if not user or ":" in user or any(c in user for c in "\r\n"):
        raise ValueError("a user name must be non-empty, without ':' or line breaks")
    target = Path(path)
    lines = target.read_bytes().splitlines() if target.exists() else []
    entry = user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds))
    prefix = user.encode() + b":"
    new = not any(line.startswith(prefix) for line in lines)
    lines = [entry if line.startswith(prefix) else line for line in lines]
    if new:
        lines.append(entry)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=".htpasswd.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new
