"""The web UI of a `dockyard serve` with access control on (tests/support/secured.py):
its own token endpoint, htpasswd users and access rules, in a real browser.

Anonymous callers may pull ``public/**``; ``reader`` may pull ``readers/**``;
``admin`` may do anything. Each sees only the repositories they may pull, and
a delete button only with delete permission.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.driving import Browser, browsing, delete_buttons_shown, sign_in
from tests.browser.seed import push_image
from tests.support.processes import Dockyard
from tests.support.secured import PASSWORDS, AuthClient, basic, start_secured

pytestmark = pytest.mark.timeout(180)
REPOS = ("public/open", "readers/doc", "team-a/app")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockyard]:
    server = start_secured(tmp_path_factory.mktemp("secured-ui"))
    admin = AuthClient(server.url, basic("admin"))
    for name in REPOS:
        for tag in ("v1", "v2"):
            push_image(admin, name, tag, layer_size=64)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(driver: Any, secured: Dockyard, screenshots: Path) -> Iterator[Browser]:
    with browsing(driver, secured.url, screenshots) as b:
        yield b


def listed(browser: Browser) -> list[str]:
    return [name for name in browser.texts("#repos tbody th") if name in REPOS]


def test_each_user_sees_what_they_may_pull_and_deletes_only_with_permission(
        browser: Browser, secured: Dockyard) -> None:
    browser.open("/ui/")
    assert listed(browser) == ["public/open"]
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])

    browser.find("#sign-in").click()
    sign_in(browser, "reader", PASSWORDS["reader"])
    browser.wait(lambda d: browser.texts("#session strong") == ["reader"])
    browser.wait(lambda d: listed(browser) == ["public/open", "readers/doc"])

    browser.open("/ui/r/readers/doc")
    # The page's script may sign in again with the stored token and reload it.
    browser.wait(lambda d: browser.texts("#tags tbody th") == ["v1", "v2"])
    assert delete_buttons_shown(browser) == 0
    browser.open("/ui/r/team-a/app")
    browser.wait(lambda d: "You may not see repository team-a/app" in " ".join(
        browser.texts("main")))
    assert not browser.all("#tags")

    browser.find("#sign-out").click()
    browser.wait(lambda d: browser.all("#auth-required"))
    sign_in(browser, "admin", PASSWORDS["admin"])
    browser.wait(lambda d: browser.texts("#session strong") == ["admin"])
    browser.wait(lambda d: browser.texts("#tags tbody th") == ["v1", "v2"])
    browser.wait(lambda d: delete_buttons_shown(browser) == 2)
    browser.find('tr[data-tag="v1"] button.delete').click()
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: browser.texts("#tags tbody th") == ["v2"])
    admin = AuthClient(secured.url, basic("admin"))
    assert admin.json("GET", "/v2/team-a/app/tags/list")[2]["tags"] == ["v2"]
    browser.shot("secured-admin")


def test_the_summary_reads_follow_the_access_rules(secured: Dockyard) -> None:
    anonymous = AuthClient(secured.url)
    status, _, body = anonymous.json(
        "GET", "/v2/_dockyard/repositories?name=team-a/app&name=public/open")
    assert status == 200
    assert [r["name"] for r in body["repositories"]] == ["public/open"]
    status, _, body = anonymous.json("GET", "/v2/_dockyard/repositories")
    assert [r["name"] for r in body["repositories"]] == ["public/open"]
    status, headers, _ = anonymous.json("GET", "/v2/team-a/app/_dockyard/tags")
    assert status == 401
    assert 'scope="repository:team-a/app:pull"' in headers["WWW-Authenticate"]
    reader = AuthClient(secured.url, basic("reader"))
    assert reader.json("GET", "/v2/team-a/app/_dockyard/tags")[0] == 403
    assert reader.json("GET", "/v2/readers/doc/_dockyard/tags")[0] == 200


def test_usage_is_refused_to_all_but_administrators(
        browser: Browser, secured: Dockyard) -> None:
    refusal = "Usage is for administrators only"
    browser.open("/ui/usage")
    browser.wait(lambda d: refusal in " ".join(browser.texts("main")))
    assert browser.find("#nav-usage").is_displayed()
    browser.find("#sign-in").click()
    sign_in(browser, "reader", PASSWORDS["reader"])
    browser.wait(lambda d: browser.texts("#session strong") == ["reader"])
    browser.open("/ui/usage")
    browser.wait(lambda d: refusal in " ".join(browser.texts("main")))
    # No figure and no repository name of the answer reaches the page.
    assert not browser.all("#usage, #registry-usage, main [title$=' bytes']")
    assert not any(name in browser.driver.page_source for name in REPOS)
    browser.shot("usage-refused")
    # An administrator, by password, gets the page's figures from the same endpoint.
    admin = AuthClient(secured.url, basic("admin"))
    status, _, usage = admin.json("GET", "/api/v1/usage")
    assert status == 200
    page = admin.request("GET", "/ui/usage")
    assert page.status == 200 and b'id="usage"' in page.data
    for name in REPOS:
        tagged = usage["repositories"][name]["tagged_bytes"]
        assert f'data-repository="{name}"'.encode() in page.data
        assert f'data-bytes="{tagged}"'.encode() in page.data
    assert AuthClient(secured.url, basic("reader")).request("GET", "/ui/usage").status == 403
