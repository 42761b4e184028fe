"""The msgpack-over-HTTP client the services use to call each other.

A call is ``POST <base>/internal/rpc/<method>`` with a msgpack map as body,
answered by a msgpack map. The client keeps pooled keep-alive connections to
every backend, bounds every call with a timeout, spreads calls over the
backends (every address of each URL, see `shared.discovery`), and retries
idempotent calls on the next backend. Calls are signed with the services'
shared secret (`shared.service_auth`), their body included.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack

from shared.discovery import Endpoints
from shared.http_client import ConnectFailed, ConnectionPool, RequestFailed

log = logging.getLogger("dockyard.rpc")

CONTENT_TYPE = "application/msgpack"
RPC_PREFIX = "/internal/rpc/"


class RpcUnavailable(Exception):
    """No backend could be reached, or none answered in time.

    `maybe_applied` is False only when no backend can have run the call (every
    attempt failed to connect, or was refused with 503); after a timeout or a
    dropped connection the call may have taken effect.
    """

    def __init__(self, message: str, maybe_applied: bool = True) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class RpcError(Exception):
    """The backend answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class RpcClient:
    """Calls spread over the backends' addresses (`shared.discovery.Endpoints`: every
    address of every URL, re-resolved and health-checked once `start` is called)."""

    def __init__(self, base_urls: list[str], timeout: float = 5.0, pool_size: int = 32, *,
                 interval: float = 5.0, health_interval: float = 2.0,
                 signer: Any = None) -> None:
        """`signer` (`shared.service_auth.ServiceKey`) signs every call, its body included."""
        if not base_urls:
            raise ValueError("an RPC client needs at least one backend")

        def make_pool(host: str, port: int) -> ConnectionPool:
            return ConnectionPool(host, port, maxsize=pool_size, timeout=timeout,
                                  connect_timeout=min(timeout, 2.0), signer=signer)

        self.endpoints = Endpoints("rpc", base_urls, make_pool, interval=interval,
                                   health_interval=health_interval)

    def start(self) -> None:
        """Re-resolve the backends' names and check their health in the background."""
        self.endpoints.start()

    def call(self, method: str, args: dict[str, Any] | None = None, *,
             idempotent: bool = True) -> Any:
        body = pack(args or {})
        order = self.endpoints.order()
        # Idempotent calls get one extra try on a fresh connection: a pooled
        # keep-alive connection may have been closed by a restarted backend.
        attempts = order + order[:1] if idempotent else order[:1]
        last: Exception | None = None
        maybe_applied = False
        headers = [("Content-Type", CONTENT_TYPE), ("Accept", CONTENT_TYPE),
                   ("Content-Length", str(len(body)))]
        for endpoint in attempts:
            pool = endpoint.pool
            try:
                resp = pool.request("POST", RPC_PREFIX + method, headers, body)
                try:
                    data = resp.read()
                finally:
                    resp.release()
            except ConnectFailed as e:
                endpoint.mark_down()
                last = e
                continue
            except RequestFailed as e:
                last = e
                maybe_applied = True
                if not idempotent:
                    break
                continue
            if resp.status == 503:
                last = RpcUnavailable(f"{pool.host}:{pool.port} unavailable")
                continue
            if resp.status != 200:
                raise RpcError(resp.status, data[:200].decode(errors="replace"))
            return unpack(data)
        log.warning("rpc %s failed: %s", method, last)
        raise RpcUnavailable(str(last), maybe_applied)


class RpcResource:
    """Server side: ``POST /internal/rpc/{method}`` dispatched to plain functions.

    A handler takes the decoded argument map and returns a msgpack-able map.
    """

    def __init__(self, handlers: dict[str, Any]) -> None:
        self._handlers = handlers

    def on_post(self, req: Any, resp: Any, method: str) -> None:
        import falcon

        handler = self._handlers.get(method)
        if handler is None:
            raise falcon.HTTPNotFound(description=f"no RPC method {method!r}")
        try:
            args = unpack(req.bounded_stream.read())
        except Exception:
            raise falcon.HTTPBadRequest(description="body is not msgpack") from None
        if not isinstance(args, dict):
            raise falcon.HTTPBadRequest(description="arguments must be a map")
        resp.content_type = CONTENT_TYPE
        resp.data = pack(handler(**args))
