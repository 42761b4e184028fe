"""The loud warning for a registry that anyone on the network may push to.

`dockyard serve --host 0.0.0.0` (any address other than loopback) with no
authentication configured lets everyone who can reach the port push,
overwrite any tag, delete any image and list every repository. That may be
intended (a lab network, a pull-through cache behind a firewall), so it is a
warning, not an error; it is logged when `serve` starts, where an operator
looks.

"Authentication configured" means access control is on
(`shared.auth.settings.enabled`): an htpasswd file, an external token issuer
or an `access` rule. Tuning knobs (cache times, limits, the challenge mode)
do not count.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from shared.auth import settings

log = logging.getLogger("dockyard.exposure")

BANNER = "!" * 78


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    # A name: loopback only when every address it resolves to is.
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def auth_configured(cfg: dict[str, Any]) -> bool:
    return settings.enabled(cfg)


def warning(cfg: dict[str, Any], host: str) -> str | None:
    """The warning for serving on `host` with `cfg`, or None when there is nothing to say."""
    if is_loopback(host) or auth_configured(cfg):
        return None
    return (f"dockyard is listening on {host}, beyond this machine, and NO AUTHENTICATION "
            "is configured: anyone who can reach the port can push, overwrite any tag, "
            "delete any image and list every repository. Configure the `auth` section, or "
            "listen on 127.0.0.1. See docs/tls-and-internal-auth.md.")


def warn(cfg: dict[str, Any], host: str) -> None:
    text = warning(cfg, host)
    if text is not None:
        log.warning(BANNER)
        log.warning("WARNING: %s", text)
        log.warning(BANNER)
