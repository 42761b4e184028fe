"""A filtered catalog page never names, in its Link, a repository the caller may
not pull: when the router scans past private names without filling a page, the
cursor it hands out is sealed (services/router/auth/listing.py).

The index here is a small HTTP server answering catalog pages from a sorted
list, the router's listing code talks to it through a real `Pool`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from services.router.auth import listing
from services.router.backends import Pool
from shared import errors

NAMES = sorted([*(f"private/p{i:02d}" for i in range(12)), "public/a", "public/z"])


class _Index(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        last, n = query.get("last", ""), int(query.get("n", "1000"))
        page = [name for name in NAMES if name > last][:n]
        body = json.dumps({"repositories": page}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index_pool() -> Iterator[Pool]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Pool("index", [f"http://127.0.0.1:{server.server_address[1]}"], 5.0, 4)
    finally:
        server.shutdown()
        server.server_close()


def _page(pool: Pool, cursors: listing.Cursors, query: str) -> tuple[list[str], str]:
    environ = {"QUERY_STRING": query, "HTTP_HOST": "registry.test", "REQUEST_METHOD": "GET"}
    headers, body = listing.catalog(pool, environ, lambda name: name.startswith("public/"),
                                    5, cursors)
    link = dict(headers).get("Link", "")
    target = link[1:link.find(">")] if link else ""
    return json.loads(body)["repositories"], dict(parse_qsl(urlsplit(target).query)).get(
        "last", "")


def test_a_scan_past_private_names_hands_out_a_sealed_cursor(
        index_pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "INDEX_PAGE", 4)
    monkeypatch.setattr(listing, "MAX_SCAN_PAGES", 2)
    cursors = listing.Cursors(b"a router's token key")
    seen: list[str] = []
    query, rounds = "n=5", 0
    while True:
        names, last = _page(index_pool, cursors, query)
        seen += names
        assert not last.startswith("private/"), last
        assert "private" not in last
        if not last:
            break
        query, rounds = f"n=5&last={last}", rounds + 1
        assert rounds < 10
    assert seen == ["public/a", "public/z"]
    assert rounds >= 1  # the first page scanned 8 private names and stopped short


def test_a_forged_cursor_is_refused(index_pool: Pool) -> None:
    cursors = listing.Cursors(b"a router's token key")
    with pytest.raises(errors.PaginationNumberInvalid):
        _page(index_pool, cursors, "n=5&last=~not-a-sealed-cursor")
    other = listing.Cursors(b"another deployment's key").seal("private/p05")
    with pytest.raises(errors.PaginationNumberInvalid):
        _page(index_pool, cursors, f"n=5&last={other}")
