"""HTTPS on the public endpoint: haproxy terminates TLS in front of the router.

waitress speaks plain HTTP only. With `tls.cert` and `tls.key` set, `dockyard
serve` starts haproxy (Debian's package, in master-worker mode) on the public
address and the router on a private loopback port behind it. Why haproxy
rather than TLS inside the Python server is measured and explained in
docs/tls-and-internal-auth.md; in short, OpenSSL in an event-driven C process
costs the router's Python threads nothing, and haproxy reloads without
dropping a connection.

The rules:

- **The certificate.** haproxy wants certificate and key in one PEM file, so
  the supervisor writes `<data dir>/tls/server.pem` (mode 0600) from the two
  files it was given, and only once `ssl` has loaded them as a matching pair:
  a half-renewed pair (the certificate written, the key not yet) is never
  served, the current one stays.
- **Renewal.** Every `tls.reload_interval` seconds the supervisor compares the
  files' (inode, size, mtime); on a change it rewrites the PEM and sends
  haproxy's master SIGUSR2. The master starts new workers with the new
  certificate on the same listening sockets and lets the old workers finish
  their connections: no restart, no refused connection, no cut download.
- **What the router learns.** haproxy replaces any client-sent
  X-Forwarded-For/-Proto/-Host and Forwarded headers with its own
  (`X-Forwarded-Proto: https`, the client's address); the router believes them
  from 127.0.0.1 only (`router.trusted_proxy`), so Location headers say https
  and logs name the real client.
- **Client certificates.** With `tls.client_ca`, a client without a
  certificate that CA signed fails the handshake (mutual TLS).
- **Plain HTTP on the TLS port** fails the handshake: haproxy closes the
  connection at once, and no request reaches the router.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("dockyard.tls")

FORWARDED_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                     "X-Forwarded-Port", "Forwarded")


def enabled(config: dict[str, Any]) -> bool:
    return bool(config["tls"]["cert"])


def find_haproxy(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError(f"TLS needs haproxy ({name!r} not found): "
                                "apt-get install haproxy, or set tls.haproxy")
    return found


def _fingerprint(paths: list[str]) -> tuple[Any, ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def build_pem(cert: str, key: str, target: Path) -> None:
    """Check that `cert` and `key` are a pair, then write both to `target` (0600) atomically.

    Raises ssl.SSLError (an OSError) or OSError when they cannot be loaded as a pair.
    """
    # Imported here: loading OpenSSL costs about 4 MiB of RSS, which the supervisor
    # pays only with TLS on.
    import ssl

    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    data = Path(cert).read_bytes().rstrip(b"\n") + b"\n" + Path(key).read_bytes()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".server-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def haproxy_config(config: dict[str, Any], public: str, router: str, pem: Path) -> str:
    """haproxy.cfg: TLS on `public` (host:port), plain HTTP to the router at `router`."""
    tls = config["tls"]
    http = config["http"]
    bind = f"{public} ssl crt {pem} alpn http/1.1"
    if tls["client_ca"]:
        bind += f" ca-file {Path(tls['client_ca']).resolve()} verify required"
    # A request's headers must fit in one buffer, less the space kept for rewrites.
    bufsize = max(16384, http["max_header_size"] + 2048)
    idle = http["idle_timeout"]
    lines = [
        "global",
        "    log stdout format raw daemon notice",
        f"    maxconn {http['connection_limit']}",
        f"    tune.bufsize {bufsize}",
        "    tune.maxrewrite 1024",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
        # Old workers get this long to finish their transfers after a reload.
        "    hard-stop-after 1h",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option dontlog-normal",
        "    timeout connect 5s",
        f"    timeout client {idle}s",
        f"    timeout http-request {idle}s",
        f"    timeout http-keep-alive {idle}s",
        f"    timeout server {config['router']['backend_timeout']}s",
        "",
        "frontend public",
        f"    bind {bind}",
        f"    backlog {http['backlog']}",
        *(f"    http-request del-header {h}" for h in FORWARDED_HEADERS),
        "    http-request set-header X-Forwarded-Proto https",
        "    option forwardfor",
        "    default_backend router",
        "",
        "backend router",
        # Any idle connection to the router serves any client's request: a client that
        # connects anew for each request (and pays a handshake) does not make the
        # router accept a connection each time too. haproxy closes idle ones (after
        # 5 s) long before the router would (http.idle_timeout).
        "    http-reuse always",
        f"    server router {router}",
        "",
    ]
    return "\n".join(lines)


class Terminator:
    """haproxy's files under `<data dir>/tls/`, and the watch on the certificate."""

    def __init__(self, config: dict[str, Any], data_dir: Path, public: str, router: str,
                 ) -> None:
        tls = config["tls"]
        self.binary = find_haproxy(tls["haproxy"])
        self.dir = data_dir / "tls"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.cert = str(Path(tls["cert"]).resolve())
        self.key = str(Path(tls["key"]).resolve())
        self.watched = [self.cert, self.key] + (
            [str(Path(tls["client_ca"]).resolve())] if tls["client_ca"] else [])
        self.interval = tls["reload_interval"]
        self.pem = self.dir / "server.pem"
        self.cfg = self.dir / "haproxy.cfg"
        build_pem(self.cert, self.key, self.pem)
        self._seen = _fingerprint(self.watched)
        self.cfg.write_text(haproxy_config(config, public, router, self.pem))
        self._next_check = 0.0

    def argv(self) -> list[str]:
        # -W: master-worker (SIGUSR2 reloads); -db: foreground, logs to stdout.
        return [self.binary, "-W", "-db", "-f", str(self.cfg)]

    def check(self, now: float) -> bool:
        """True when the certificate files changed and the new pair was installed."""
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        seen = _fingerprint(self.watched)
        if seen == self._seen:
            return False
        try:
            build_pem(self.cert, self.key, self.pem)
        except OSError as e:  # ssl.SSLError is one
            # Most likely mid-renewal; the next check tries again.
            log.warning("renewed TLS certificate not usable yet (%s); still serving the "
                        "previous one", e)
            return False
        self._seen = seen
        return True


def reload(pid: int) -> None:
    """Ask haproxy's master to start workers with the new certificate (hitless)."""
    log.info("TLS certificate renewed: reloading haproxy (pid %d)", pid)
    os.kill(pid, signal.SIGUSR2)


def _child_class() -> type:
    from services.supervisor import Child

    class TerminatorChild(Child):
        """The haproxy child, which also watches for a renewed certificate."""

        terminator: Terminator

        def poll(self, now: float) -> None:
            super().poll(now)
            if (self.process is not None and self.restart_at is None
                    and self.process.poll() is None and self.terminator.check(now)):
                reload(self.process.pid)

        def stop(self) -> None:
            # SIGTERM is haproxy's hard stop, which would cut the HTTPS requests
            # in flight; SIGUSR1 is its soft stop: close the listener, let each
            # connection finish its request, then exit (the drain, haproxy's way).
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGUSR1)

    return TerminatorChild


def terminator_child(config: dict[str, Any], data_dir: Path, public: str,
                     router: str) -> Any:
    """The supervisor's child that runs haproxy on `public`, forwarding to `router`."""
    terminator = Terminator(config, data_dir, public, router)
    child = _child_class()("tls", terminator.argv())
    child.terminator = terminator
    return child
