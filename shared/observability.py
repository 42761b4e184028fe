"""Access lines, request ids and Prometheus metrics, the same for every service."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"

access_log = logging.getLogger("dockyard.access")


class Metrics:
    """The per-process Prometheus registry with the request metrics every service has."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dockyard_http_requests_total", "HTTP requests answered",
            ["service", "method", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "dockyard_http_request_duration_seconds", "Time to answer a request in full",
            ["service", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
        )
        self.bytes_out = Counter(
            "dockyard_http_response_bytes_total", "Response body bytes sent",
            ["service"], registry=self.registry,
        )
        self.bytes_in = Counter(
            "dockyard_http_request_bytes_total", "Request body bytes received",
            ["service"], registry=self.registry,
        )
        self.service = service

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_multiprocess_metrics(sock: socket.socket) -> None:
    """Serve /metrics on a listening socket that several processes share, in a
    thread: each answer adds up the samples every process of the group wrote to
    `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode), so a
    scrape sees the whole group whichever process accepts it."""
    from prometheus_client import make_wsgi_app, multiprocess
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    server = ThreadingWSGIServer(sock.getsockname()[:2], _SilentHandler,
                                 bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()[:2]
    server.server_name, server.server_port = "localhost", server.server_address[1]
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: Any, resp: Any) -> None:
        resp.content_type = METRICS_CONTENT_TYPE
        resp.data = self._metrics.render()


class _CountingIterable:
    """Wraps a WSGI response body to log and count once the last byte is sent."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]) -> None:
        self._body = body
        self._done = done
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


class AccessLog:
    """WSGI middleware: request id, one access line per request, request metrics.

    It wraps the whole app rather than being Falcon middleware so that the
    line is written when the body has been sent, with the true duration and
    byte count of a streamed blob.
    """

    def __init__(self, app: Callable[..., Any], metrics: Metrics, enabled: bool = True) -> None:
        self._app = app
        self._metrics = metrics
        self._enabled = enabled

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        request_id = environ.get(_REQUEST_ID_ENVIRON) or uuid.uuid4().hex
        environ[_REQUEST_ID_ENVIRON] = request_id
        status_holder: list[str] = ["500"]
        file_wrapper_used: list[Any] = []

        def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            status_holder[0] = status[:3]
            # A proxied answer already carries the backend's copy of the same id.
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers.append((REQUEST_ID_HEADER, request_id))
            for name, value in headers:
                if name.lower() == "content-length":
                    file_wrapper_used.append(int(value))
            return start_response(status, headers, exc_info)

        body = self._app(environ, _start_response)

        def done(sent: int) -> None:
            # A file wrapper bypasses iteration; its Content-Length is what went out.
            if sent == 0 and file_wrapper_used and environ["REQUEST_METHOD"] != "HEAD":
                sent = file_wrapper_used[0]
            self._record(environ, status_holder[0], sent, time.perf_counter() - started,
                         request_id)

        wrapper_cls = environ.get("wsgi.file_wrapper")
        if wrapper_cls is not None and isinstance(body, wrapper_cls):
            # Keep the server's fast path for files; log when it closes the wrapper.
            original_close = getattr(body, "close", None)

            def close() -> None:
                try:
                    if original_close is not None:
                        original_close()
                finally:
                    done(0)

            body.close = close
            return body
        return _CountingIterable(body, done)

    def _record(self, environ: dict[str, Any], status: str, sent: int, seconds: float,
                request_id: str) -> None:
        m = self._metrics
        method = environ.get("REQUEST_METHOD", "-")
        m.requests.labels(m.service, method, status).inc()
        m.duration.labels(m.service, method).observe(seconds)
        m.bytes_out.labels(m.service).inc(sent)
        received = environ.get("CONTENT_LENGTH") or "0"
        if received.isdigit():
            m.bytes_in.labels(m.service).inc(int(received))
        if self._enabled:
            path = environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING"):
                path += "?" + environ["QUERY_STRING"]
            access_log.info(
                "%s %s %s %d %.1fms id=%s", method, path, status, sent, seconds * 1000,
                request_id,
                extra={"fields": {"method": method, "path": path, "status": int(status),
                                  "bytes": sent, "ms": round(seconds * 1000, 2),
                                  "request_id": request_id}},
            )
