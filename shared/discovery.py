"""The backends of one service: every address its configured URLs resolve to, kept healthy.

A configured URL may name one host (``http://10.0.0.5:5100``) or a DNS name
with several addresses, as ``docker compose --scale`` and Kubernetes headless
services give (``http://storage:5100``). The rules:

- **Every address is used.** A name is resolved to all its addresses (IPv4
  and IPv6); each becomes an `Endpoint` with its own connection pool, and
  requests are spread round-robin over them.
- **Re-resolved periodically** (``discovery.interval``): addresses that
  appear are added, addresses that vanish are dropped (their idle connections
  closed). A failed or empty lookup keeps the last known set, and a name that
  never resolved is kept as itself, so a DNS outage never empties a pool.
- **Unhealthy endpoints leave the rotation and come back on their own.** One
  that refuses a connection is passed over for `DOWN_SECONDS`; one whose
  health check (``GET /readyz`` every ``discovery.health_interval``) fails is
  passed over until a check succeeds. Passed over means tried last, not
  skipped: when every endpoint is down, requests still go to them in turn, so
  the service comes back the moment one answers.

The lookups and checks run on one background thread per `Endpoints`
(`start`); without it the set resolved at construction is used as it is.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from shared.http_client import ConnectFailed, ConnectionPool, RequestFailed

log = logging.getLogger("dockyard.discovery")

# How long an endpoint that refused a connection is passed over before it is tried again.
DOWN_SECONDS = 1.0
HEALTH_TIMEOUT = 1.0

Resolver = Callable[[str, int], list[str]]
PoolFactory = Callable[[str, int], ConnectionPool]


def resolve(host: str, port: int) -> list[str]:
    """Every address of `host`, in the order the resolver gives them, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _is_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            continue
    return False


class Endpoint:
    """One address of a service, with its pooled connections and its health."""

    def __init__(self, host: str, port: int, pool: ConnectionPool, via: str) -> None:
        self.host = host
        self.port = port
        self.pool = pool
        self.via = via
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{port}"
        self.down_until = 0.0
        self.healthy = True

    def mark_down(self) -> None:
        if self.down_until <= time.monotonic():
            log.warning("backend %s is not answering", self.url)
        self.down_until = time.monotonic() + DOWN_SECONDS

    @property
    def up(self) -> bool:
        return self.healthy and self.down_until <= time.monotonic()

    def probe(self, path: str = "/readyz") -> tuple[bool, str]:
        try:
            resp = self.pool.request("GET", path, [("Content-Length", "0")],
                                     timeout=HEALTH_TIMEOUT)
            try:
                resp.read()
            finally:
                resp.release()
        except (ConnectFailed, RequestFailed) as e:
            return False, type(e).__name__
        return resp.status == 200, "ready" if resp.status == 200 else f"status {resp.status}"


class Endpoints:
    def __init__(self, name: str, urls: list[str], make_pool: PoolFactory, *,
                 interval: float = 5.0, health_interval: float = 2.0,
                 health_path: str = "/readyz", resolver: Resolver = resolve) -> None:
        if not urls:
            raise ValueError(f"{name}: at least one URL is needed")
        self.name = name
        self._targets = []
        for url in urls:
            parts = urlsplit(url)
            self._targets.append((parts.hostname or "127.0.0.1", parts.port or 80))
        self._make_pool = make_pool
        self._resolver = resolver
        self.interval = interval
        self.health_interval = health_interval
        self.health_path = health_path
        self._endpoints: list[Endpoint] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()

    # -- the set -------------------------------------------------------------------

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._endpoints

    def refresh(self) -> None:
        """Resolve every configured URL again and update the set."""
        wanted: list[tuple[str, int, str]] = []
        for host, port in self._targets:
            if _is_literal(host):
                wanted.append((host, port, host))
                continue
            try:
                addresses = self._resolver(host, port)
            except OSError as e:
                addresses = []
                log.warning("%s: cannot resolve %s (%s); keeping its known addresses",
                            self.name, host, e)
            if not addresses:
                known = [(e.host, e.port, e.via) for e in self._endpoints if e.via == host]
                wanted.extend(known or [(host, port, host)])
            else:
                wanted.extend((address, port, host) for address in addresses)
        with self._lock:
            current = {(e.host, e.port): e for e in self._endpoints}
            fresh: list[Endpoint] = []
            for host, port, via in dict.fromkeys(wanted):
                endpoint = current.pop((host, port), None)
                if endpoint is None:
                    endpoint = Endpoint(host, port, self._make_pool(host, port), via)
                    if self._endpoints:
                        log.info("%s: added %s (from %s)", self.name, endpoint.url, via)
                fresh.append(endpoint)
            self._endpoints = fresh
        for gone in current.values():
            log.info("%s: removed %s", self.name, gone.url)
            gone.pool.close()

    def order(self) -> list[Endpoint]:
        """Endpoints to try for one request: the live ones first, starting round-robin."""
        endpoints = self._endpoints
        with self._lock:
            start = next(self._counter) % len(endpoints)
        rotated = endpoints[start:] + endpoints[:start]
        return [e for e in rotated if e.up] + [e for e in rotated if not e.up]

    # -- health --------------------------------------------------------------------

    def check_health(self) -> None:
        for endpoint in list(self._endpoints):
            ok, state = endpoint.probe(self.health_path)
            if ok != endpoint.healthy:
                log.log(logging.INFO if ok else logging.WARNING, "%s: %s is %s", self.name,
                        endpoint.url, "back" if ok else f"unhealthy ({state})")
            endpoint.healthy = ok

    def start(self) -> threading.Thread | None:
        if self.interval <= 0 and self.health_interval <= 0:
            return None
        thread = threading.Thread(target=self._run, name=f"discovery-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_resolve = time.monotonic() + self.interval
        while not self._stop.wait(self.health_interval if self.health_interval > 0
                                  else self.interval):
            try:
                if time.monotonic() >= next_resolve:
                    next_resolve = time.monotonic() + self.interval
                    self.refresh()
                if self.health_interval > 0:
                    self.check_health()
            except Exception:  # the thread must outlive any one failure
                log.exception("%s: discovery round failed", self.name)


__all__ = ["DOWN_SECONDS", "Endpoint", "Endpoints", "resolve"]
