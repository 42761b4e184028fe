"""The UI's static files (``services/router/ui/static/``), and the headers every
UI answer carries.

Files are read once, at import, from the installed package: nothing is
fetched from a network at run time. Pages link each file as
``/ui/static/<file>?v=<hash of its bytes>``; an answer to a URL with the
current hash may be cached for a year (a new release links a new URL), any
other is revalidated with its ETag, which also covers the files the script
imports by relative URL.

`SECURITY_HEADERS` go on every UI answer. The policy allows scripts, styles,
images and requests from this origin only, no inline script or style, no
plugins, no framing, and forms that post only here.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import falcon

TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    root = resources.files("services.router.ui").joinpath("static")
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in TYPES:
            data = entry.read_bytes()
            files[entry.name] = (data, TYPES[suffix], hashlib.sha256(data).hexdigest()[:16])
    return files


FILES = _load()


def asset_url(name: str) -> str:
    return f"/ui/static/{name}?v={FILES[name][2]}"


def secure(resp: falcon.Response) -> None:
    for name, value in SECURITY_HEADERS:
        resp.set_header(name, value)


class StaticResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        found = FILES.get(name)
        if found is None:
            raise falcon.HTTPNotFound()
        data, content_type, digest = found
        secure(resp)
        resp.content_type = content_type
        resp.etag = f'"{digest}"'
        if req.get_param("v") == digest:
            resp.cache_control = ["public", "max-age=31536000", "immutable"]
        else:
            resp.cache_control = ["no-cache"]
        if req.if_none_match and any(getattr(t, "value", t) == digest
                                     for t in req.if_none_match):
            resp.status = falcon.HTTP_304
            return
        resp.data = data

    on_head = on_get
