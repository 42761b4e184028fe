"""Locks across storage replicas as lease objects in the bucket (`backends.s3`).

A lock is the object ``locks/<name>``, created with ``If-None-Match: *`` so exactly
one writer creates it, renewed by its holder every third of its lease with
``If-Match`` on its ETag, and released by a DELETE with ``If-Match``. A lease that
ran out (its holder died) is taken over by a conditional write on its ETag; so is
the lease of a holder on this machine whose process is gone.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from services.storage.backends.s3_io import BodyReader, NotFound, PreconditionFailed, log
from shared import errors

if TYPE_CHECKING:
    from services.storage.backends.s3 import S3Backend

# Seconds a lock's lease lasts without renewal: how long a dead holder on another
# machine blocks others. Shorter than the default timeout, so a waiter outlasts it.
LEASE = 8.0
# Who holds a lease: a holder on this machine whose process is gone is dead at once.
# "This machine" is the host name *and* the PID namespace: two containers with one
# host name (host networking) but their own process ids never judge each other's.


def _pid_namespace() -> str:
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


_HOST = socket.gethostname()
_PIDNS = _pid_namespace()


class Leases:
    def __init__(self, backend: S3Backend) -> None:
        self._b = backend

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        token = uuid.uuid4().hex
        held = [self._acquire(key, token)]
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(key, token, held, stop),
                                   name="s3-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                self._b.call("delete_object", Key=key, IfMatch=held[0])
            except (NotFound, PreconditionFailed):
                log.warning("object store: lock %s was taken over before its release", key)
            except errors.Unavailable:
                pass    # its lease runs out

    def _lease(self, token: str) -> bytes:
        return msgpack.packb({"token": token, "expires": time.time() + LEASE,
                              "host": _HOST, "pidns": _PIDNS, "pid": os.getpid()})

    def _acquire(self, key: str, token: str) -> str:
        deadline = time.monotonic() + self._b.timeout
        delay = 0.005
        while True:
            try:
                return self._b.put(key, self._lease(token), IfNoneMatch="*")
            except PreconditionFailed:
                pass
            # Held: take it over when its holder stopped renewing it.
            try:
                answer = self._b.call("get_object", Key=key)
                with contextlib.closing(BodyReader(answer["Body"])) as body:
                    lease = msgpack.unpackb(io.BufferedReader(body).read())
                if float(lease["expires"]) < time.time() or _died_here(lease):
                    return self._b.put(key, self._lease(token), IfMatch=str(answer["ETag"]))
            except (NotFound, PreconditionFailed):
                pass  # released or taken meanwhile: try again, within the deadline
            except (ValueError, KeyError, TypeError):
                log.warning("object store: lock %s holds no lease; replacing it", key)
                with contextlib.suppress(NotFound):
                    self._b.call("delete_object", Key=key)
            # Every way round the loop passes here: under churn it still backs off
            # and gives up at the deadline.
            if time.monotonic() + delay > deadline:
                raise errors.Unavailable("busy: another request holds this upload or "
                                         "manifest; retry", retry_after=1)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _renew(self, key: str, token: str, held: list[str], stop: threading.Event) -> None:
        while not stop.wait(LEASE / 3):
            try:
                held[0] = self._b.put(key, self._lease(token), IfMatch=held[0])
            except (NotFound, PreconditionFailed):
                log.error("object store: lost lock %s", key)
                return
            except errors.Unavailable:
                continue


def _died_here(lease: dict[str, Any]) -> bool:
    """Whether the lease's holder was a process of this machine and PID namespace that
    is gone (a storage process killed and restarted): its lock need not wait out the
    lease. A reused pid reads as alive, which only means waiting for the lease; a
    holder in another namespace (or that did not say which) is never judged here."""
    if (lease.get("host") != _HOST or not _PIDNS or lease.get("pidns") != _PIDNS
            or not isinstance(lease.get("pid"), int)):
        return False
    if lease["pid"] == os.getpid():
        return False
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
