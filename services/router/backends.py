"""Backend pools: the addresses of one service, pooled connections, and their health.

A pool is a `shared.discovery.Endpoints`: every address its URLs resolve to,
re-resolved and health-checked in the background once `start` is called.
"""

from __future__ import annotations

from shared.discovery import DOWN_SECONDS, Endpoint, Endpoints
from shared.http_client import ConnectionPool
from shared.service_auth import ServiceKey

Backend = Endpoint


class Pool(Endpoints):
    """The backends of one service; requests are spread round-robin over those that are up."""

    def __init__(self, name: str, urls: list[str], timeout: float, maxsize: int, *,
                 interval: float = 5.0, health_interval: float = 2.0,
                 signer: ServiceKey | None = None) -> None:
        """`signer` signs every request: storage and the index answer only signed calls."""

        def make_pool(host: str, port: int) -> ConnectionPool:
            return ConnectionPool(host, port, timeout=timeout, maxsize=maxsize, signer=signer)

        super().__init__(name, urls, make_pool, interval=interval,
                         health_interval=health_interval)

    @property
    def backends(self) -> list[Backend]:
        return self.endpoints


__all__ = ["DOWN_SECONDS", "Backend", "Pool"]
