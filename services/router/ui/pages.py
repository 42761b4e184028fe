"""The home page (repositories) and a repository's page (its tags).

Both render on the server from the public API's answers (`api.Api`), so they
read without JavaScript and every page is a link; the script adds the instant
filter, copying, and deleting. Paging follows the API: the catalog by
``last`` cursor (never a count of 100,000 repositories), search and tags by
page number.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import falcon

from services.router.ui import templates as t
from services.router.ui.api import Answer, Api, Wsgi
from services.router.ui.static import secure
from services.router.ui.templates import h

HOME_PAGE_SIZE = 50
TAGS_PAGE_SIZE = 100
SORTS = ("name", "-name", "pushed", "-pushed")


class Page:
    """A page: a client of the public API for the request, and one HTML answer."""

    def __init__(self, app: Wsgi) -> None:
        self._app = app

    def on_head(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        # Falcon sends no body for HEAD; the headers are GET's.
        self.on_get(req, resp, **params)  # type: ignore[attr-defined]

    def api(self, req: falcon.Request) -> Api:
        return Api(self._app, req.env)

    @staticmethod
    def send(resp: falcon.Response, html: bytes, status: str = falcon.HTTP_200) -> None:
        secure(resp)
        resp.status = status
        resp.content_type = "text/html; charset=utf-8"
        # Pages show what the registry holds now, and may be a signed-in user's.
        resp.cache_control = ["no-store"]
        resp.data = html

    @staticmethod
    def failure(answer: Answer, what: str) -> str:
        """A page body for an API answer that is not a success."""
        if answer.challenge:
            return t.auth_required(answer.challenge)
        body = answer.json()
        message = ""
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            message = f"{first.get('code', '')}: {first.get('message', '')}"
        if answer.status == 404:
            return t.notice(f"{what} was not found. {message}", "warn")
        if answer.status == 403:
            return t.notice(f"You may not see {what}. {message}", "warn")
        return t.notice(f"The registry answered {answer.status} for {what}. {message}", "error")

    @staticmethod
    def status_of(answer: Answer) -> str:
        return {400: falcon.HTTP_400, 401: falcon.HTTP_401, 403: falcon.HTTP_403,
                404: falcon.HTTP_404}.get(
            answer.status, falcon.HTTP_502)


def page_param(req: falcon.Request) -> int:
    """``page``, from 1; anything else (a typo in a shared link) is the first page."""
    raw = req.get_param("page") or ""
    return max(1, min(int(raw), 1 << 20)) if raw.isascii() and raw.isdigit() and \
        len(raw) < 9 else 1


def _repo_rows(repos: list[dict[str, Any]]) -> list[str]:
    return [
        f'<tr><th scope="row"><a href="{h(t.repo_url(r["name"]))}">{h(r["name"])}</a></th>'
        f'<td class="description">{h(r.get("description", ""))}</td>'
        f'<td class="num">{int(r.get("tags", 0)):,}</td>'
        f'<td class="num">{t.size(r.get("size"))}</td>'
        f'<td>{t.age(r.get("pushed"))}</td></tr>'
        for r in repos
    ]


REPO_HEADERS = ('<th scope="col">Name</th>', '<th scope="col">Description</th>',
                '<th scope="col" class="num">Tags</th>', '<th scope="col" class="num">Size</th>',
                '<th scope="col">Last push</th>')


class HomePage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api = self.api(req)
        query = (req.get_param("q") or "").strip()[:256]
        last = req.get_param("last") or ""
        page_number = page_param(req) if query else 1
        status = falcon.HTTP_200
        pager = ""
        if query:
            found = api.get("/v1/search", {"q": query, "n": HOME_PAGE_SIZE,
                                           "page": page_number})
            data = found.json() if found.status == 200 else None
            names = [r["name"] for r in data["results"]] if data else []
            summary = api.get("/v2/_dockyard/repositories", [("name", n) for n in names]) \
                if names else found
            if data and page_number < data.get("num_pages", 0):
                url = t.query_url("/ui/", q=query, page=page_number + 1)
                pager = f'<a rel="next" href="{h(url)}">Next page</a>'
            counted = (f'<p class="count" id="count" role="status">{int(data["num_results"]):,} '
                       f'repositor{"y" if data["num_results"] == 1 else "ies"} match</p>'
                       if data else "")
        else:
            summary = api.get("/v2/_dockyard/repositories", {"n": HOME_PAGE_SIZE, "last": last})
            following = _next_last(summary.headers.get("link", ""))
            if following and summary.status == 200:
                # The Link's own cursor: a page may end past names it does not
                # show (private ones, sealed by the router), or show none at all.
                pager = (f'<a rel="next" href="{h(t.query_url("/ui/", last=following))}">'
                         "Next page</a>")
            counted = ""
        if last or page_number > 1:
            pager = f'<a href="/ui/">First page</a> {pager}'
        if summary.status == 200 and (not query or names):
            rows = _repo_rows(summary.json()["repositories"])
            listing = counted + t.table("Repositories", REPO_HEADERS, rows, table_id="repos",
                                        empty="No repositories yet.")
        elif summary.status == 200:
            listing = counted + '<p class="empty">No repository matches.</p>'
        else:
            listing, status = self.failure(summary, "the repository list"), \
                self.status_of(summary)
        body = f"""<h1>Repositories</h1>
<form class="filter" role="search" method="get" action="/ui/">
<label for="q">Filter repositories by name or description</label>
<div class="row"><input type="search" id="q" name="q" value="{h(query)}"
 autocomplete="off" spellcheck="false"><button type="submit">Search</button></div>
</form>
<div id="listing">{listing}</div>
<nav class="pager" id="pager" aria-label="Pages">{pager}</nav>"""
        self.send(resp, t.layout("Repositories", body, page="home", host=api.host), status)


def _next_last(link: str) -> str:
    """The `last` of a ``Link: <...?n=..&last=..>; rel="next"`` header, or ""."""
    if 'rel="next"' not in link or "<" not in link:
        return ""
    target = link[link.index("<") + 1:link.find(">")]
    return dict(parse_qsl(urlsplit(target).query)).get("last", "")


def _platforms(platforms: list[str]) -> str:
    return " ".join(f'<span class="chip">{h(p)}</span>' for p in platforms) or "—"


class RepositoryPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        api = self.api(req)
        sort = req.get_param("sort") or "name"
        sort = sort if sort in SORTS else "name"
        page_number = page_param(req)
        answer = api.get(f"/v2/{name}/_dockyard/tags",
                         {"sort": sort, "n": TAGS_PAGE_SIZE, "page": page_number})
        crumbs = [("Repositories", "/ui/")]
        if answer.status != 200:
            self.send(resp, t.layout(name, f"<h1>{h(name)}</h1>" +
                                     self.failure(answer, f"repository {name}"),
                                     page="repository", host=api.host, repo=name,
                                     crumbs=crumbs), self.status_of(answer))
            return
        data = answer.json()
        about = data.get("repository")
        if not isinstance(about, dict):  # an index without it: ask for it
            summary = api.get("/v2/_dockyard/repositories", {"name": name}).json() or {}
            about = (summary.get("repositories") or [{}])[0]
        tags = data["tags"]
        default = next((x["tag"] for x in tags if x["tag"] == "latest"),
                       tags[0]["tag"] if tags else "latest")
        ref = f"{api.host}/{name}:{default}"
        row = TagRow(api.host, name)
        rows = [row(tag) for tag in tags]
        body = f"""<h1>{h(name)}</h1>
<p class="description">{h(about.get("description", ""))}</p>
{t.key_values([("Tags", f"{int(data['total']):,}"), ("Size", t.size(about.get("size"))),
               ("Last push", t.age(about.get("pushed")))])}
<section aria-labelledby="pull-title"><h2 id="pull-title">Pull</h2>
{t.code_with_copy(f"docker pull {ref}", "Copy docker command")}
{t.code_with_copy(f"podman pull {ref}", "Copy podman command")}
</section>
<section aria-labelledby="tags-title"><h2 id="tags-title">Tags</h2>
{t.table("Tags", self._headers(name, sort), rows, table_id="tags", empty="No tags.")}
<nav class="pager" aria-label="Pages">{self._pager(name, sort, page_number, data)}</nav>
</section>"""
        self.send(resp, t.layout(name, body, page="repository", host=api.host, repo=name,
                                 crumbs=crumbs))

    @staticmethod
    def _headers(name: str, sort: str) -> list[str]:
        def sortable(label: str, forward: str, backward: str, forward_state: str) -> str:
            # `forward` is the first order a click asks for; a second click reverses it.
            backward_state = "ascending" if forward_state == "descending" else "descending"
            state, target = {forward: (forward_state, backward),
                             backward: (backward_state, forward)}.get(sort, ("none", forward))
            return (f'<th scope="col" aria-sort="{state}"><a href="'
                    f'{h(t.query_url(t.repo_url(name), sort=target))}">{label}</a></th>')
        # Names read A to Z first; push times newest first (the API's "pushed").
        return [sortable("Tag", "name", "-name", "ascending"), '<th scope="col">Digest</th>',
                '<th scope="col" class="num">Size</th>', '<th scope="col">Platforms</th>',
                sortable("Pushed", "pushed", "-pushed", "descending"),
                '<th scope="col">Actions</th>']

    @staticmethod
    def _pager(name: str, sort: str, page_number: int, data: dict[str, Any]) -> str:
        pages = max(1, -(-int(data["total"]) // TAGS_PAGE_SIZE))
        def link(rel: str, number: int, label: str) -> str:
            url = t.query_url(t.repo_url(name), sort=sort, page=number)
            return f'<a rel="{rel}" href="{h(url)}">{label}</a>'
        links = []
        if page_number > 1:
            links.append(link("prev", page_number - 1, "Previous page"))
        if pages > 1:
            links.append(f"<span>Page {page_number} of {pages}</span>")
        if page_number < pages:
            links.append(link("next", page_number + 1, "Next page"))
        return " ".join(links)


class TagRow:
    """One row of the tags table. What is the same on every row (the repository's
    escaped name and URL, the clock) is worked out once per page: a page shows
    up to 100 rows, and escaping and quoting are most of its cost."""

    def __init__(self, host: str, name: str) -> None:
        self.manifests = t.repo_url(name) + "/-/manifests/"
        self.pull = f"docker pull {host}/{name}:"
        self.now = time.time()

    def __call__(self, tag: dict[str, Any]) -> str:
        digest, name = tag["digest"], tag["tag"]
        shown = h(name)
        return (f'<tr data-tag="{shown}"><th scope="row"><a href="'
                f'{h(self.manifests + quote(name, safe=":"))}">{shown}</a></th>'
                f'<td><code title="{h(digest)}">{h(t.short_digest(digest))}</code> '
                f'{t.copy_button(digest, "Copy digest")}</td>'
                f'<td class="num">{t.size(tag.get("size"))}</td>'
                f'<td>{_platforms(tag.get("platforms") or [])}</td>'
                f'<td>{t.age(tag.get("pushed"), self.now)}</td>'
                f'<td class="actions">{t.copy_button(self.pull + name, "Copy pull command")} '
                f'<button type="button" class="danger delete" hidden data-kind="tag" '
                f'data-reference="{shown}">Delete tag</button></td></tr>')
