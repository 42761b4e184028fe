"""GET /v2/<name>/tags/list and GET /v2/_catalog, paginated with n, last and Link."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import falcon

from services.index.store import IndexStore, Page
from shared import errors
from shared.events import CACHEABLE_HEADER
from shared.urls import external_url
from shared.validation import check_name, parse_pagination

# Without `n`, a tags list is whole (as distribution does); a catalog page
# holds CATALOG_DEFAULT. No page is ever larger than MAX_PAGE.
MAX_PAGE = 10_000
CATALOG_DEFAULT = 1000


def _respond(req: falcon.Request, resp: falcon.Response, path: str, body: dict,
             page: Page, n: int) -> None:
    if page.more and page.items:
        query = urlencode({"n": n, "last": page.items[-1]})
        resp.set_header("Link", f'<{external_url(req, path)}?{query}>; rel="next"')
    resp.set_header(CACHEABLE_HEADER, "1")
    resp.content_type = "application/json"
    resp.data = json.dumps(body).encode()


class TagsResource:
    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        check_name(name)
        n, last = parse_pagination(req.get_param("n"), req.get_param("last"),
                                   default=1 << 30, maximum=MAX_PAGE)
        page = self._store.tags(name, last, n)
        if page is None:
            raise errors.NameUnknown(detail={"name": name})
        _respond(req, resp, f"/v2/{name}/tags/list", {"name": name, "tags": page.items},
                 page, n)


class CatalogResource:
    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        n, last = parse_pagination(req.get_param("n"), req.get_param("last"),
                                   default=CATALOG_DEFAULT, maximum=MAX_PAGE)
        page = self._store.catalog(last, n)
        _respond(req, resp, "/v2/_catalog", {"repositories": page.items}, page, n)
