"""External URLs: what a client must see in Location and Link headers."""

from __future__ import annotations

import falcon


def external_base(req: falcon.Request) -> str:
    """The scheme and host the client used, as the router passed them on.

    The router sets X-Forwarded-Host/Proto, so a Location built here points at
    the public address rather than at this service's internal port.
    """
    host = req.get_header("X-Forwarded-Host") or req.get_header("Host") or req.host
    host = host.split(",")[0].strip()
    proto = (req.get_header("X-Forwarded-Proto") or req.scheme).split(",")[0].strip()
    return f"{proto}://{host}"


def external_url(req: falcon.Request, path: str) -> str:
    return external_base(req) + path
