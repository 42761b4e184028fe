"""The web UI: pages at ``/ui/``, its static files, and ``/`` for browsers.

`install` is the router's only contact with it: it adds the UI's routes to
the router's local app, and hands the UI the router's public WSGI app, which
is what every page reads the registry through (see `api`). The UI has no
state-changing endpoint of its own: deletes are the browser's own DELETE
requests to the registry API (see ``static/app.js`` and docs/web-ui.md).
"""

from __future__ import annotations

import falcon

from services.router.ui.api import Wsgi
from services.router.ui.manifest_page import ManifestPage
from services.router.ui.pages import HomePage, RepositoryPage
from services.router.ui.static import StaticResource
from services.router.ui.usage_page import UsagePage
from shared import errors, routing

REPOSITORY = r"/ui/r/" + routing.NAME
MANIFEST = REPOSITORY + r"/-/manifests/(?P<reference>[^/]+)"


class RootResource:
    """``/``: a browser (it asks for HTML) goes to the UI; any other client gets the
    registry's 404, as before the UI existed."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if "text/html" not in (req.get_header("Accept") or ""):
            raise errors.NotFound(detail={"path": "/"})
        raise falcon.HTTPFound("/ui/")

    on_head = on_get


class UiRedirect:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPMovedPermanently("/ui/")


def install(app: falcon.App, public: Wsgi) -> None:
    """Serve the UI from `app`, reading the registry through `public`."""
    app.add_route("/", RootResource())
    app.add_route("/ui", UiRedirect())
    app.add_route("/ui/", HomePage(public))
    app.add_route("/ui/usage", UsagePage(public))
    app.add_route("/ui/static/{name}", StaticResource())
    pages = routing.RegexRouter()
    pages.add(MANIFEST, ManifestPage(public))
    pages.add(REPOSITORY, RepositoryPage(public))
    pages.install(app, r"/ui/r/")
