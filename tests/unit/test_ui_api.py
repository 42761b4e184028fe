"""The UI's server-side client (services/router/ui/api.py) and its page helpers:
which credentials a page's API requests carry, and what a page shows for a 401."""

from __future__ import annotations

from typing import Any

from services.router.ui.api import TOKEN_COOKIE, Answer, Api
from services.router.ui.pages import Page
from services.router.ui.templates import h


class Recorder:
    """A WSGI app that answers 200 and keeps the environ of each request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.seen.append(environ)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


def outer(**headers: str) -> dict[str, Any]:
    return {"SERVER_NAME": "registry.example", "SERVER_PORT": "5000",
            "HTTP_HOST": "registry.example:5000", **headers}


def test_a_page_reads_with_the_cookie_token_or_the_browser_authorization() -> None:
    app = Recorder()
    Api(app, outer(HTTP_COOKIE=f"a=b; {TOKEN_COOKIE}=abc.def-_x; c=d")).get("/v2/x/tags/list")
    assert app.seen[-1]["HTTP_AUTHORIZATION"] == "Bearer abc.def-_x"
    assert app.seen[-1]["PATH_INFO"] == "/v2/x/tags/list"
    Api(app, outer(HTTP_AUTHORIZATION="Basic Zm9vOmJhcg==",
                   HTTP_COOKIE=f"{TOKEN_COOKIE}=abc")).get("/v2/")
    assert app.seen[-1]["HTTP_AUTHORIZATION"] == "Basic Zm9vOmJhcg=="
    # Nothing but token characters is forwarded from a cookie.
    Api(app, outer(HTTP_COOKIE=f'{TOKEN_COOKIE}=a"b\r\nX: y')).get("/v2/")
    assert "HTTP_AUTHORIZATION" not in app.seen[-1]
    Api(app, outer()).get("/v1/search", {"q": "a b", "n": 5})
    assert app.seen[-1]["QUERY_STRING"] == "q=a+b&n=5"
    assert "HTTP_AUTHORIZATION" not in app.seen[-1]


def test_a_401_becomes_a_sign_in_notice_carrying_the_challenge_escaped() -> None:
    challenge = 'Bearer realm="http://r/auth/token",service="s",scope="repository:a:pull"'
    body = Page.failure(Answer(401, {"www-authenticate": challenge}, b""), "repository a")
    assert f'data-challenge="{h(challenge)}"' in body
    assert "Sign in required" in body
    denied = Page.failure(Answer(403, {}, b'{"errors": [{"code": "DENIED", '
                                          b'"message": "<b>no</b>"}]}'), "repository a")
    assert "DENIED: &lt;b&gt;no&lt;/b&gt;" in denied
