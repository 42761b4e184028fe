"""The usage page (``/ui/usage``): the space the registry uses, from ``GET /api/v1/usage``.

It reads the endpoint through the UI's in-process API client like every
page, so the endpoint's own check decides who sees it: with access control
on, only an administrator (`shared.auth.admin`: by password, or with a token
of this registry carrying ``registry:usage:*``, which the UI asks for when it
signs in). A 401 or 403 becomes an "administrators only" page that shows
nothing of the answer; a 401 also carries the challenge the script signs in
with. The
endpoint never computes per request; the page shows when its figures were
computed. Sorting is a query parameter, so it works without the script.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import falcon

from services.router.ui import templates as t
from services.router.ui.pages import Page
from services.router.ui.templates import h

# sort parameter -> (key of a repository's figures, largest first)
SORTS = {"tagged": "tagged_bytes", "exclusive": "exclusive_bytes", "name": "name"}


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _computed(at: object) -> str:
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return "—"
    iso = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return t.age(iso.replace("+00:00", "Z"))


def _sorted(repos: dict[str, Any], sort: str) -> list[tuple[str, dict[str, Any]]]:
    key, reverse = sort.lstrip("-"), sort.startswith("-")
    field = SORTS[key]
    items = [(n, r) for n, r in repos.items() if isinstance(n, str) and isinstance(r, dict)]
    if field == "name":
        return sorted(items, reverse=reverse)
    # Bytes read largest first on the first click; ties by name.
    items.sort(key=lambda kv: kv[0])
    return sorted(items, key=lambda kv: _count(kv[1].get(field)) or 0, reverse=not reverse)


class UsagePage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api = self.api(req)
        sort = req.get_param("sort") or "tagged"
        sort = sort if sort.lstrip("-") in SORTS and sort.count("-") <= 1 else "tagged"
        answer = api.get("/api/v1/usage")
        data = answer.json() if answer.status == 200 else None
        if answer.status in (401, 403):
            # Nothing of the answer is shown: not even its error detail. A 401's
            # challenge (anonymous, or an administrator's token without the usage
            # scope) lets the script sign in for it; a signed-in non-administrator
            # gets 403, and only this notice.
            body = ("<h1>Usage</h1>" + t.notice(
                "Usage is for administrators only: it names every repository and its size. "
                "Sign in as an administrator to see it.", "warn")
                + (t.auth_required(answer.challenge) if answer.challenge else ""))
            self.send(resp, t.layout("Usage", body, page="usage", host=api.host),
                      self.status_of(answer))
            return
        if not isinstance(data, dict) or not isinstance(data.get("registry"), dict) \
                or not isinstance(data.get("repositories"), dict):
            body = "<h1>Usage</h1>" + self.failure(answer, "usage")
            self.send(resp, t.layout("Usage", body, page="usage", host=api.host),
                      self.status_of(answer) if answer.status != 200 else falcon.HTTP_502)
            return
        reg = data["registry"]
        ratio = reg.get("dedup_ratio")
        facts = t.key_values([
            ("Physical", t.size(_count(reg.get("physical_bytes")))),
            ("Logical", t.size(_count(reg.get("logical_bytes")))),
            ("Referenced", t.size(_count(reg.get("referenced_bytes")))),
            ("Reclaimable", t.size(_count(reg.get("reclaimable_bytes")))),
            ("Dedup ratio", h(ratio) if isinstance(ratio, (int, float)) else "—"),
            ("Blobs", f"{_count(reg.get('blobs')) or 0:,}"),
            ("Computed", _computed(data.get("computed_at"))),
        ])
        rows = [self._row(name, r) for name, r in _sorted(data["repositories"], sort)]
        body = f"""<h1>Usage</h1>
<section aria-labelledby="registry-title" id="registry-usage">
<h2 id="registry-title">Registry</h2>
{facts}
<p>Physical: every blob on disk once. Logical: what the repositories' tagged
images would take without sharing. Reclaimable: what the next collection deletes.</p>
</section>
<section aria-labelledby="repos-title"><h2 id="repos-title">Repositories</h2>
{t.table("Space per repository", self._headers(sort), rows, table_id="usage",
         empty="No repositories.")}
</section>"""
        self.send(resp, t.layout("Usage", body, page="usage", host=api.host))

    @staticmethod
    def _headers(sort: str) -> list[str]:
        def sortable(label: str, key: str, first: str, css: str = "") -> str:
            # A first click asks for `first` order; a second reverses it.
            other = "ascending" if first == "descending" else "descending"
            state, target = {key: (first, f"-{key}"), f"-{key}": (other, key)}.get(
                sort, ("none", key))
            cls = f' class="{css}"' if css else ""
            return (f'<th scope="col"{cls} aria-sort="{state}"><a href="'
                    f'{h(t.query_url("/ui/usage", sort=target))}">{label}</a></th>')
        return [sortable("Repository", "name", "ascending"),
                '<th scope="col" class="num">Tags</th>',
                '<th scope="col" class="num">Manifests</th>',
                sortable("Tagged", "tagged", "descending", "num"),
                sortable("Only here", "exclusive", "descending", "num")]

    @staticmethod
    def _row(name: str, r: dict[str, Any]) -> str:
        tagged, exclusive = _count(r.get("tagged_bytes")), _count(r.get("exclusive_bytes"))
        upstream = r.get("cached_from")
        cached = (f' <span class="chip" title="cached from {h(upstream)}">cached</span>'
                  if isinstance(upstream, str) and upstream else "")
        return (f'<tr data-repository="{h(name)}"><th scope="row"><a href="'
                f'{h(t.repo_url(name))}">{h(name)}</a>{cached}</th>'
                f'<td class="num">{_count(r.get("tags")) or 0:,}</td>'
                f'<td class="num">{_count(r.get("manifests")) or 0:,}</td>'
                f'<td class="num" data-bytes="{h(tagged)}">{t.size(tagged)}</td>'
                f'<td class="num" data-bytes="{h(exclusive)}">{t.size(exclusive)}</td></tr>')
