"""An upstream registry for the pull-through cache tests: distribution 2.8.2 on loopback.

`UpstreamRegistry` runs Debian's ``docker-registry`` with a config of the
test's own, optionally behind Docker token authentication (a test-made key
and certificate, and `TokenServer`, a tiny token endpoint). `Front` is a
small HTTP proxy the tests put between dockyard and the upstream: it counts
requests, can corrupt blob bodies, answer 503, or be stopped, so tests can
check exactly what dockyard asked of the upstream.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3

from tests.support.processes import free_port, wait_http

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Served:
    """A ThreadingHTTPServer of the test's own on a loopback port, in a daemon thread."""

    port: int
    _server: ThreadingHTTPServer | None

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class TokenServer(_Served):
    """Issues RS256 tokens with an x5c header, as distribution's `auth.token` accepts."""

    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    lifetime: int = 300
    issued: int = 0
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bundle = self.directory / "token.crt"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, subject: str, scope: str) -> str:
        import jwt

        access = []
        if scope:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "test-issuer", "sub": subject, "aud": "upstream", "iat": now,
                  "nbf": now - 5, "exp": now + self.lifetime, "jti": os.urandom(8).hex(),
                  "access": access}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [self._x5c]})

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                subject = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(user) != password:
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    subject = user
                scope = query.get("scope", [""])[0] if subject or not server.users else ""
                server.issued += 1
                body = json.dumps({"token": server.token(subject, scope),
                                   "expires_in": server.lifetime}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)
        return self


@dataclass
class UpstreamRegistry:
    """`docker-registry serve` with filesystem storage in the test's directory."""

    directory: Path
    tokens: TokenServer | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UpstreamRegistry:
        self.directory.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.directory / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "test-secret"},
        }
        if self.tokens is not None:
            config["auth"] = {"token": {"realm": self.tokens.realm, "service": "upstream",
                                        "issuer": "test-issuer",
                                        "rootcertbundle": str(self.tokens.bundle)}}
        path = self.directory / "config.yml"
        path.write_text(json.dumps(config))
        self.log = open(self.directory / "registry.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(["docker-registry", "serve", str(path)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/v2/", status=401 if self.tokens else 200)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process is not None:
            self.log.close()


class Pusher:
    """Pushes to the upstream through its API, as `docker push` would."""

    def __init__(self, url: str, token: str = "") -> None:
        self.url = url
        self.http = urllib3.PoolManager(retries=False, timeout=60)
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.http.request("POST", f"{self.url}/v2/{name}/blobs/uploads/", headers=self.auth)
        assert r.status == 202, (r.status, r.data)
        location = r.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        r = self.http.request("PUT", f"{location}{sep}digest={digest}", body=data,
                              headers={**self.auth, "Content-Type": "application/octet-stream"})
        assert r.status == 201, (r.status, r.data)
        return digest

    def image(self, name: str, tag: str, layers: list[bytes] | None = None) -> dict[str, Any]:
        """Push a small image; its manifest bytes, digest and layer digests."""
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []},
                             "nonce": os.urandom(8).hex()}).encode()
        layers = layers if layers is not None else [os.urandom(4096)]
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": self.blob(name, config), "size": len(config)},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                           "digest": self.blob(name, data), "size": len(data)}
                          for data in layers]}
        body = json.dumps(doc).encode()
        r = self.http.request("PUT", f"{self.url}/v2/{name}/manifests/{tag}", body=body,
                              headers={**self.auth, "Content-Type": OCI_MANIFEST})
        assert r.status == 201, (r.status, r.data)
        return {"manifest": body, "digest": sha256(body), "layers": doc["layers"],
                "config": config, "blobs": {d["digest"]: data for d, data in
                                            zip(doc["layers"], layers, strict=True)}}


class Front(_Served):
    """A counting, optionally tampering or failing HTTP proxy in front of the upstream."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.corrupt_blobs = False
        self.truncate_blobs = False  # close the connection halfway through a blob body
        self.fail_status = 0  # answer every request with this status (429, 503) when set
        self.delay = 0.0  # seconds to sleep before answering a blob GET
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(retries=False, timeout=60, maxsize=64)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(n for (m, p), n in self.requests.items() if m == method and fragment in p)

    def start(self) -> Front:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                with front._lock:
                    front.requests[(self.command, self.path)] += 1
                if front.fail_status:
                    self.send_response(front.fail_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                r = front._http.request(self.command, front.target + self.path, body=body,
                                        headers=headers, redirect=False,
                                        preload_content=False)
                is_blob = self.command == "GET" and "/blobs/sha256:" in self.path
                if is_blob and front.delay:
                    time.sleep(front.delay)
                self.send_response(r.status)
                for k, v in r.headers.items():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                if "Content-Length" not in r.headers:
                    data = r.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                self.end_headers()
                if self.command == "HEAD":
                    r.drain_conn()
                    return
                if is_blob and front.truncate_blobs:
                    half = int(r.headers["Content-Length"]) // 2
                    self.wfile.write(r.read(half))
                    r.release_conn()
                    self.close_connection = True
                    return
                first = True
                for chunk in r.stream(256 * 1024):
                    if is_blob and front.corrupt_blobs and first:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    first = False
                    self.wfile.write(chunk)
                r.release_conn()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self._serve(Handler)
        return self
