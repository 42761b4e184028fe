"""GET /v1/search: the legacy search API behind `docker search` and `podman search`.

Matching and ranking are `services.index.search`'s; a query it refuses (more
than `MAX_QUERY_WORDS` words) is a 400 with the reason as its message.
"""

from __future__ import annotations

import json
import math

import falcon

from services.index.search import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueryInvalid, SearchIndex
from shared import errors
from shared.events import CACHEABLE_HEADER


def _int_param(req: falcon.Request, name: str, default: int) -> int:
    raw = req.get_param(name)
    digits = raw.strip().lstrip("-") if raw is not None else ""
    # isascii: str.isdigit() is also true of "²", which int() refuses.
    if raw is None or not (digits.isascii() and digits.isdigit()) or len(raw) > 9:
        return default
    return int(raw)


class SearchResource:
    def __init__(self, search: SearchIndex) -> None:
        self._search = search

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = req.get_param("q") or ""
        page_size = min(max(_int_param(req, "n", DEFAULT_PAGE_SIZE), 1), MAX_PAGE_SIZE)
        page = max(_int_param(req, "page", 1), 1)
        try:
            found = self._search.search(query, page, page_size)
        except QueryInvalid as e:
            raise errors.SearchQueryInvalid(str(e), detail={"query": query[:200]}) from None
        if found.current:
            resp.set_header(CACHEABLE_HEADER, "1")
        resp.content_type = "application/json"
        resp.data = json.dumps({
            "num_results": found.total,
            "num_pages": math.ceil(found.total / page_size) if found.total else 0,
            "page": page,
            "page_size": page_size,
            "query": query,
            "results": [
                {"name": name, "description": description, "star_count": 0,
                 "is_official": False, "is_automated": False}
                for name, description in found.results
            ],
        }).encode()
