"""Catalog pages and search answers that name only repositories the caller may pull.

The router asks the index for its pages (never through the response cache,
whose answers are shared by every caller) and keeps the names the caller may
pull. Catalog paging stays exact: the index lists names in order, so a page
ends at the last name returned, or at the last name examined when a page
scanned `MAX_SCAN_PAGES` index pages without filling up, and `last=` that
name continues right after it. A name the caller may not pull never appears
in a `Link`: such a cursor is sealed (`Cursors`), so that scanning past
private repositories does not name them. Search answers are filtered over the first
`MAX_SEARCH_RESULTS` matches, then paged with the caller's `n` and `page`.
The web UI's repository summaries page as the catalog does, or answer only
for the named repositories the caller may pull.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.fernet import Fernet, InvalidToken

from services.router.backends import Pool
from shared import errors
from shared.http_client import ConnectFailed, RequestFailed
from shared.validation import is_valid_name, parse_pagination

INDEX_PAGE = 1000
CATALOG_DEFAULT, CATALOG_MAX = 1000, 10_000
MAX_SCAN_PAGES = 50
SEARCH_PAGE, SEARCH_DEFAULT = 100, 25
MAX_SEARCH_RESULTS = 5000


# A sealed cursor starts with "~", which no repository name does.
SEALED = "~"


class Cursors:
    """Catalog cursors that do not reveal the name they stand for (Fernet, keyed
    from the router's token key, which every router process of a deployment shares)."""

    def __init__(self, secret: bytes) -> None:
        key = hashlib.sha256(b"dockyard catalog cursor\0" + secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, name: str) -> str:
        return SEALED + self._fernet.encrypt(name.encode()).decode()

    def open(self, last: str) -> str:
        """The name a `last` stands for: itself, or the one a sealed cursor holds."""
        if not last.startswith(SEALED):
            return last
        try:
            return self._fernet.decrypt(last[len(SEALED):].encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise errors.PaginationNumberInvalid(detail={"last": last[:50]}) from None


def _get(pool: Pool, target: str, retry_after: int) -> Any:
    for backend in pool.order():
        try:
            resp = backend.pool.request("GET", target, [("Content-Length", "0")])
            try:
                body = resp.read()
            finally:
                resp.release()
        except (ConnectFailed, RequestFailed):
            backend.mark_down()
            continue
        if resp.status != 200:
            raise _refusal(resp.status, body) or errors.Unavailable(
                "the index could not list repositories", retry_after=retry_after)
        return json.loads(body)
    raise errors.Unavailable(f"no {pool.name} backend is available", retry_after=retry_after)


def _refusal(status: int, body: bytes) -> errors.RegistryError | None:
    """The index's refusal of the request itself (a 4xx, such as a search query of too
    many words), passed on as it is: the caller gets the answer a registry without
    access control gives, not a 503 that invites a retry of the same request."""
    if not 400 <= status < 500:
        return None
    try:
        entry = json.loads(body)["errors"][0]
        code, message = entry["code"], entry["message"]
    except (ValueError, LookupError, TypeError):
        return None
    if not (isinstance(code, str) and isinstance(message, str)):
        return None
    err = errors.RegistryError(message, detail=entry.get("detail"))
    err.status, err.code = status, code
    return err


def _int(raw: str | None, default: int) -> int:
    digits = (raw or "").strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        return default
    return int(digits)


def _base(environ: dict[str, Any]) -> str:
    host = (environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST")
            or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}").split(",")[0].strip()
    proto = (environ.get("HTTP_X_FORWARDED_PROTO")
             or environ.get("wsgi.url_scheme", "http")).split(",")[0].strip()
    return f"{proto}://{host}"


def catalog(pool: Pool, environ: dict[str, Any], may_pull: Callable[[str], bool],
            retry_after: int, cursors: Cursors) -> tuple[list[tuple[str, str]], bytes]:
    params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    n, last = parse_pagination(params.get("n"), params.get("last"),
                               default=CATALOG_DEFAULT, maximum=CATALOG_MAX)
    last = cursors.open(last)
    names: list[str] = []
    cursor, more = last, n > 0
    for _ in range(MAX_SCAN_PAGES if n else 0):
        query = urlencode({"n": INDEX_PAGE, "last": cursor} if cursor else {"n": INDEX_PAGE})
        page = _get(pool, f"/v2/_catalog?{query}", retry_after)["repositories"]
        more = len(page) == INDEX_PAGE
        for name in page:
            cursor = name
            if may_pull(name):
                names.append(name)
                if len(names) == n:
                    break
        if len(names) == n or not more:
            more = more or cursor != (page[-1] if page else cursor)
            break
    headers = [("Content-Type", "application/json")]
    if more and cursor and n:
        shown = cursor if may_pull(cursor) else cursors.seal(cursor)
        link = f"{_base(environ)}/v2/_catalog?{urlencode({'n': n, 'last': shown})}"
        headers.append(("Link", f'<{link}>; rel="next"'))
    return headers, json.dumps({"repositories": names}).encode()


def search(pool: Pool, environ: dict[str, Any], may_pull: Callable[[str], bool],
           retry_after: int, cursors: Cursors) -> tuple[list[tuple[str, str]], bytes]:
    params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    # Whole, as a registry without access control passes it: the index bounds the
    # work of any query itself (at most 10 words), and a cut query would match
    # repositories that a word past the cut excludes.
    query = params.get("q", "")
    page_size = min(max(_int(params.get("n"), SEARCH_DEFAULT), 1), SEARCH_PAGE)
    page = max(_int(params.get("page"), 1), 1)
    results: list[dict[str, Any]] = []
    number, pages = 1, 1
    while number <= pages and number * SEARCH_PAGE <= MAX_SEARCH_RESULTS:
        answer = _get(pool, "/v1/search?" + urlencode(
            {"q": query, "n": SEARCH_PAGE, "page": number}), retry_after)
        pages = answer.get("num_pages", 0)
        results.extend(r for r in answer["results"] if may_pull(r["name"]))
        number += 1
    body = {
        "num_results": len(results),
        "num_pages": math.ceil(len(results) / page_size) if results else 0,
        "page": page, "page_size": page_size, "query": query,
        "results": results[(page - 1) * page_size: page * page_size],
    }
    return [("Content-Type", "application/json")], json.dumps(body).encode()


SUMMARIES_DEFAULT, SUMMARIES_MAX, SUMMARIES_PER_ASK = 100, 1000, 100


def summaries(pool: Pool, environ: dict[str, Any], may_pull: Callable[[str], bool],
              retry_after: int, cursors: Cursors) -> tuple[list[tuple[str, str]], bytes]:
    """``/v2/_dockyard/repositories``: the names of a filtered catalog page (or the
    `name`s asked for that the caller may pull), with their summaries."""
    pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    asked = [v for k, v in pairs if k == "name"]
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if asked:
        if len(asked) > SUMMARIES_PER_ASK:
            raise errors.PaginationNumberInvalid(detail={"name": "at most 100"})
        names = [name for name in asked if is_valid_name(name) and may_pull(name)]
    else:
        params = dict(pairs)
        n, last = parse_pagination(params.get("n"), params.get("last"),
                                   default=SUMMARIES_DEFAULT, maximum=SUMMARIES_MAX)
        page_headers, body = catalog(pool, {**environ, "QUERY_STRING": urlencode(
            {"n": n, "last": last})}, may_pull, retry_after, cursors)
        names = json.loads(body)["repositories"]
        headers = [(k, v.replace("/v2/_catalog?", "/v2/_dockyard/repositories?"))
                   for k, v in page_headers]
    found: list[Any] = []
    for start in range(0, len(names), SUMMARIES_PER_ASK):
        query = urlencode([("name", name) for name in names[start:start + SUMMARIES_PER_ASK]])
        found += _get(pool, f"/v2/_dockyard/repositories?{query}", retry_after)["repositories"]
    return headers, json.dumps({"repositories": found}).encode()
