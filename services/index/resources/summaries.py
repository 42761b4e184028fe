"""The summary reads behind the web UI (`services.index.summaries`), as JSON.

``GET /v2/_dockyard/repositories`` pages the catalog (``n``, ``last``, Link as
``/v2/_catalog`` does) with each repository's description, tag count, size and
last push; with ``name`` (repeatable, at most `MAX_NAMES`) it answers for
those repositories only, which is how the UI decorates search results.

``GET /v2/<name>/_dockyard/tags`` answers a page of the repository's tags
with digest, media type, size, platforms and push time, sorted by ``sort``
(``name``, ``-name``, ``pushed`` newest first, ``-pushed`` oldest first),
``n`` per page (default and maximum `MAX_TAGS`), page ``page`` (from 1),
and the repository's own summary (``repository``, as the first read answers
it), so that a repository's page needs one read.

``_dockyard`` cannot be a repository path component (components start with a
letter or digit), so neither path can be mistaken for a repository's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import falcon

from services.index.store import IndexStore
from services.index.summaries import SORTS, RepositorySummary
from shared import errors
from shared.events import CACHEABLE_HEADER
from shared.urls import external_url
from shared.validation import check_name, parse_pagination

MAX_REPOSITORIES = 1000
DEFAULT_REPOSITORIES = 100
MAX_NAMES = 100
MAX_TAGS = 1000


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def summary_json(s: RepositorySummary) -> dict[str, Any]:
    return {"name": s.name, "description": s.description, "tags": s.tags, "size": s.size,
            "pushed": iso(s.pushed)}


def _json(resp: falcon.Response, body: dict[str, Any]) -> None:
    resp.content_type = "application/json"
    resp.data = json.dumps(body).encode()


class RepositorySummariesResource:
    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        names = req.get_param_as_list("name") or []
        if names:
            if len(names) > MAX_NAMES:
                raise errors.PaginationNumberInvalid(detail={"name": f"at most {MAX_NAMES}"})
            for name in names:
                check_name(name)
            more = False
        else:
            n, last = parse_pagination(req.get_param("n"), req.get_param("last"),
                                       default=DEFAULT_REPOSITORIES, maximum=MAX_REPOSITORIES)
            page = self._store.catalog(last, n)
            names, more = page.items, page.more
            if more and names:
                query = urlencode({"n": n, "last": names[-1]})
                resp.set_header("Link", f'<{external_url(req, req.path)}?{query}>; rel="next"')
        summaries = self._store.summaries.repositories(names)
        _json(resp, {"repositories": [summary_json(s) for s in summaries]})


class TagSummariesResource:
    def __init__(self, store: IndexStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        check_name(name)
        n, _ = parse_pagination(req.get_param("n"), None, default=MAX_TAGS, maximum=MAX_TAGS)
        page_number, _ = parse_pagination(req.get_param("page"), None, default=1,
                                          maximum=1 << 30)
        page_number = max(page_number, 1)
        sort = req.get_param("sort") or "name"
        if sort not in SORTS:
            sort = "name"
        page = self._store.summaries.tags(name, sort, (page_number - 1) * n, n)
        if page is None:
            raise errors.NameUnknown(detail={"name": name})
        resp.set_header(CACHEABLE_HEADER, "1")
        _json(resp, {"name": name, "total": page.total, "page": page_number, "page_size": n,
                     "sort": sort, "tags": [
                         {"tag": t.tag, "digest": t.digest, "mediaType": t.media_type,
                          "artifactType": t.artifact_type, "size": t.size,
                          "platforms": t.platforms, "pushed": iso(t.pushed)}
                         for t in page.tags],
                     "repository": summary_json(page.repository)})
